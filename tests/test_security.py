"""Security: personal data behind Feast permissions, no secret in any committed file, loopback by default.

* ``feature_repo/permissions.py`` is applied with the repository. With Feast's own enforcement (the security
  manager its servers install, and its feature server over HTTP with a bearer token), the predictor's role reads
  ``repo_activity`` and ``next_week_commits_v1`` online but is denied ``author_activity``/``author_profile_v1``;
  only the PII reader role reads them. The token parser is a test double standing in for the identity provider
  (OIDC or Kubernetes TokenReview in a deployment); the decisions are Feast's.
* No committed text file holds a secret (passwords in URLs, private keys, tokens); connection settings reach the
  Feast yamls only as ``${VAR}``.
* The predictor's HTTP server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import inspect
import re
import subprocess
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from reliability import deployment
from reliability.servers import local_env
from skewless.core.config import FEATURE_REPO, PROJECT_ROOT

DAY = date(2026, 8, 20)
REPOS = ("encode/httpx", "spf13/cobra")
PREDICTOR, TRAINER, PII_READER, PLATFORM = ("skewless-predictor", "skewless-trainer", "skewless-pii-reader",
                                            "skewless-platform")


@pytest.fixture(scope="module")
def applied(tmp_path_factory, sample_parquet):
    """A local deployment of two repositories, applied (permissions included) and materialized."""
    root = tmp_path_factory.mktemp("security")
    t = pq.read_table(sample_parquet)
    subset = root / "subset.parquet"
    pq.write_table(t.filter(pc.is_in(t["repo"], pa.array(REPOS))), subset)
    env = local_env(root / "home")
    with deployment.exported(env) as p:
        from skewless import features
        from skewless.ops import feast_ops
        from skewless.lake import ingest

        ingest.ingest([subset])
        features.build(DAY, p)
        feast_ops.apply(p)
        feast_ops.materialize(DAY, p)
        authors = sorted(set(t.filter(pc.is_in(t["repo"], pa.array(REPOS)))["author_id"].to_pylist()))[:3]
    return {"env": env, "authors": authors}


@pytest.fixture
def security(applied):
    """Feast's security manager over the applied registry; yields a function that sets the current user."""
    from feast.permissions.security_manager import SecurityManager, no_security_manager, set_security_manager
    from feast.permissions.user import User

    with deployment.exported(applied["env"]) as p:
        from skewless.ops import feast_ops

        store = feast_ops.feature_store(p)
        sm = SecurityManager(project=store.project, registry=store.registry)
        set_security_manager(sm)
        try:
            yield store, lambda *roles: sm.set_current_user(User(username="-".join(roles) or "nobody",
                                                                 roles=list(roles)))
        finally:
            no_security_manager()


def _allowed(resource, action) -> bool:
    from feast.errors import FeastPermissionError
    from feast.permissions.security_manager import assert_permissions

    try:
        assert_permissions(resource=resource, actions=[action])
        return True
    except FeastPermissionError:
        return False


def test_permissions_are_registered(security):
    store, _ = security
    names = {p.name for p in store.list_permissions()}
    assert {"non_pii_online_reads", "pii_reads", "non_pii_offline_reads", "platform_admin"} <= names


def test_predictor_role_reads_repo_features_but_not_author_features(security):
    from feast.permissions.action import AuthzedAction

    store, login = security
    repo_fv, author_fv = store.get_feature_view("repo_activity"), store.get_feature_view("author_activity")
    repo_fs, author_fs = store.get_feature_service("next_week_commits_v1"), store.get_feature_service(
        "author_profile_v1")
    online, offline = AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE
    login(PREDICTOR)
    assert _allowed(repo_fv, online) and _allowed(repo_fs, online)
    assert not _allowed(author_fv, online) and not _allowed(author_fs, online)
    assert not _allowed(author_fv, offline) and not _allowed(repo_fv, offline)  # the predictor trains nothing
    assert _allowed(author_fv, AuthzedAction.DESCRIBE)  # schemas are not personal data
    assert not _allowed(repo_fv, AuthzedAction.WRITE_ONLINE)
    login(TRAINER)
    assert _allowed(repo_fv, offline) and not _allowed(author_fv, offline) and not _allowed(repo_fv, online)
    login(PII_READER)
    assert _allowed(author_fv, online) and _allowed(author_fv, offline) and _allowed(author_fs, online)
    login()  # an authenticated identity with no role
    assert not any(_allowed(r, a) for r in (repo_fv, author_fv) for a in (online, offline))
    login(PLATFORM)
    assert _allowed(author_fv, AuthzedAction.WRITE_ONLINE) and _allowed(repo_fv, AuthzedAction.UPDATE)


def test_every_personal_data_object_is_restricted(security, applied):
    """Whatever the repository declares: objects tagged pii (and their sources) are for the PII reader only."""
    from feast.permissions.action import AuthzedAction

    from skewless.ops import feast_ops

    store, login = security
    with deployment.exported(applied["env"]) as p:
        repo = feast_ops.repo_contents(p)
    views = list(repo.feature_views) + list(repo.feature_services)
    pii_sources = {v.batch_source.name for v in repo.feature_views if "pii" in v.tags}
    sources = list(repo.data_sources)
    assert any("pii" in o.tags for o in views), "no object is tagged pii: the test would check nothing"
    for obj in views + sources:
        personal = "pii" in obj.tags or obj.name in pii_sources
        for role, action, open_access in ((PREDICTOR, AuthzedAction.READ_ONLINE, True),
                                          (TRAINER, AuthzedAction.READ_OFFLINE, True),
                                          (PII_READER, AuthzedAction.READ_ONLINE, False)):
            login(role)
            expected = (not personal) if open_access else personal
            if obj in sources and action is AuthzedAction.READ_ONLINE:
                continue  # sources are read offline only
            assert _allowed(obj, action) == expected, f"{role} {action.value} {type(obj).__name__} {obj.name}"


class _TokenParser:
    """Test double of the identity provider: a bearer token names a role set."""

    TOKENS = {"predictor-token": PREDICTOR, "pii-token": PII_READER}

    async def user_details_from_access_token(self, access_token: str):
        from feast.permissions.user import User

        role = self.TOKENS.get(access_token)
        if role is None:
            raise ValueError("unknown token")
        return User(username=access_token, roles=[role])


def test_feature_server_denies_author_features_to_the_predictor(security, applied):
    """Feast's own HTTP feature server, with the security manager and a bearer-token auth manager."""
    from fastapi.testclient import TestClient
    from feast.feature_server import get_app
    from feast.permissions.auth.auth_manager import AllowAll, AuthManager, set_auth_manager
    from feast.permissions.server.rest_token_extractor import RestTokenExtractor

    store, _ = security
    set_auth_manager(AuthManager(token_parser=_TokenParser(), token_extractor=RestTokenExtractor()))
    try:
        with TestClient(get_app(store, registry_ttl_sec=0), raise_server_exceptions=False) as client:
            def read(service: str, key: str, values: list[str], token: str | None):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return client.post("/get-online-features", headers=headers,
                                   json={"feature_service": service, "entities": {key: values}})

            authors = applied["authors"]
            ok = read("next_week_commits_v1", "repo", list(REPOS), "predictor-token")
            assert ok.status_code == 200, ok.text
            denied = read("author_profile_v1", "author_id", authors, "predictor-token")
            assert denied.status_code == 403, denied.text
            assert "author_profile_v1" in denied.text
            assert read("author_profile_v1", "author_id", authors, None).status_code == 401
            assert read("author_profile_v1", "author_id", authors, "forged").status_code == 401
            granted = read("author_profile_v1", "author_id", authors, "pii-token")
            assert granted.status_code == 200, granted.text
    finally:
        set_auth_manager(AllowAll())


# --- secrets ------------------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "password in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?P<password>(?!\$\{)[^@\s/'\"]+)@[^\s'\"]+",
                                    re.I),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "assigned secret": re.compile(
        r"(?i)\b(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)\b['\"]?\s*[:=]\s*"
        r"['\"](?!\$\{)[^'\"\s]{8,}['\"]"),
}


#: Stand-ins that documentation and tests use where a credential would go (not secrets).
PLACEHOLDERS = {"password", "pass", "passwd", "pwd", "token", "secret", "s3cret", "xxx", "xxxx", "***", "changeme",
                "<password>"}
#: A line carrying this marker is a deliberate fake (the detect-secrets convention); the scan skips it.
ALLOW = "pragma: allowlist secret"


def find_secrets(text: str) -> list[str]:
    """The kinds of secret-looking strings in ``text`` (placeholder URL passwords and ALLOW lines do not count)."""
    text = "\n".join(line for line in text.splitlines() if ALLOW not in line)
    kinds = []
    for kind, rx in SECRET_PATTERNS.items():
        for m in rx.finditer(text):
            if "password" in rx.groupindex and m.group("password").lower() in PLACEHOLDERS:
                continue
            kinds.append(kind)
            break
    return kinds


def test_secret_scanner_finds_each_kind():
    fake = {
        "password in a URL": "postgresql+psycopg://skewless:hunter22@db.internal:5432/skewless",
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "AWS access key": "key AKIAABCDEFGHIJKLMNOP here",
        "GitHub token": "ghp_" + "a1B2" * 9,
        "Slack token": "xoxb-1234567890-abcdefghij",
        "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "assigned secret": 'password = "correct-horse-battery"',
    }
    for kind, text in fake.items():
        assert kind in find_secrets(text), kind
    clean = ("postgresql+psycopg://postgres@127.0.0.1:5432/skewless", "path: ${SKEWLESS_PG_URL}",
             'password = "${PG_PASSWORD}"', "redis://127.0.0.1:6379/0",
             "https://github.com/feast-dev/feast/issues/6821", "https://user:token@github.com/acme/widgets.git")
    for text in clean:
        assert not find_secrets(text), text
    assert not find_secrets(f'api_key = "AKIAABCDEFGHIJKLMNOP"  # {ALLOW}')


def _committed_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    files = []
    for name in out.decode().split("\0"):
        path = PROJECT_ROOT / name
        if not name or not path.is_file() or name == "uv.lock":
            continue
        head = path.read_bytes()[:4096]
        if b"\0" in head:  # binary (parquet, images)
            continue
        files.append(path)
    return files


def test_no_secret_in_any_committed_file():
    files = _committed_text_files()
    assert any(f.name == "feature_store.production.yaml" for f in files) and any("dags" in f.parts for f in files)
    found = {}
    for path in files:
        if path.name == "test_security.py" and path.parent.name == "tests":
            continue  # this file spells the patterns out
        kinds = find_secrets(path.read_text(errors="replace"))
        if kinds:
            found[str(path.relative_to(PROJECT_ROOT))] = kinds
    assert not found, f"secret-looking strings in committed files: {found}"


def test_feature_store_yamls_take_connections_from_the_environment():
    for path in sorted(FEATURE_REPO.glob("feature_store*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        for section, key in (("registry", "path"), ("online_store", "connection_string"),
                             ("online_store", "path")):
            value = (cfg.get(section) or {}).get(key)
            if value is None:
                continue
            is_url = "://" in str(value) or "," in str(value) or re.search(r":\d+", str(value))
            assert not is_url or re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*\}", str(value)), \
                f"{path.name} {section}.{key} = {value!r}: connection settings must come from ${{VAR}}"


# --- serving ------------------------------------------------------------------------------------------------------

def test_predictor_binds_loopback_by_default():
    pytest.importorskip("kserve")
    from serving import server
    from serving.predictor import NextWeekCommitsPredictor

    from skewless.cli import serving as cli

    assert server.DEFAULT_HOST == "127.0.0.1"
    for fn in (server.serve, server.uvicorn_server, server.BackgroundServer.__init__):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1", fn.__qualname__
    host_option = inspect.signature(cli.serve).parameters["host"].default
    assert getattr(host_option, "default", host_option) in ("127.0.0.1", server.DEFAULT_HOST)
    model = NextWeekCommitsPredictor(feature_log=False)  # not loaded: the server starts and reports not ready
    with server.BackgroundServer([model]) as srv:
        bound = {s.getsockname()[0] for srv_ in srv.server.servers for s in srv_.sockets}
    assert bound == {"127.0.0.1"}
