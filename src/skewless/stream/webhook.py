"""The push webhook (``skewless events serve``): commit events over HTTP, into the event log.

``POST /events`` takes skewless's own body, ``{"commits": [{...commit columns...}, ...]}`` (or a JSON list of
them; ``"kind": "retract"`` with repo and sha withdraws a commit). ``POST /github`` takes GitHub's ``push`` event
payload: each commit's ``id``, ``timestamp`` and author e-mail (hashed to ``author_id`` as the lake does), the
languages of its added/modified/removed paths; GitHub's payload carries no line counts and no parent count, so
``lines_added``/``lines_deleted`` are 0 and ``is_merge`` is false for commits that arrive this way (README
"Features"). A force-push's dropped commits are not listed in the payload: push the repository with
``skewless events push PATH`` to retract them.

Answers: 202 with the number of events accepted (durable in the log); 400 for a body that is not JSON or not the
expected shape, 413 for a body over :data:`MAX_BODY`, 415 for a content type other than JSON, 422 for events that
break a rule of ``skewless ingest`` (the same message), 404/405 for other paths and methods, 503 when the log is
unreachable. A bad request never gets a 5xx, and nothing of a refused request is stored.

With a secret (``SKEWLESS_WEBHOOK_SECRET``, GitHub's webhook secret) every POST must carry
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, as GitHub signs its deliveries; a missing or wrong
signature gets 401 and nothing is read further. Without one the webhook takes unsigned requests: keep it on
loopback (the default host) or behind a proxy that authenticates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from skewless.core.errors import SkewlessError
from skewless.lake.gitsource import author_id, language_of
from skewless.lake.ingest import IngestError
from skewless.stream.intake import events_of_table, publish, table_of_rows
from skewless.stream.log import EventLog

log = logging.getLogger(__name__)

#: The largest body accepted (bytes).
MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def github_rows(payload: Any) -> list[dict[str, Any]]:
    """Commit rows from GitHub's push payload (see the module docstring)."""
    if not isinstance(payload, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "a GitHub push payload is a JSON object")
    repo = (payload.get("repository") or {}).get("full_name") if isinstance(payload.get("repository"), dict) else None
    if not isinstance(repo, str) or not repo:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "the payload has no repository.full_name")
    commits = payload.get("commits")
    if not isinstance(commits, list):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "the payload has no list of commits")
    rows = []
    for i, c in enumerate(commits):
        if not isinstance(c, dict):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"commits[{i}] is not an object")
        author = c.get("author") if isinstance(c.get("author"), dict) else {}
        email = author.get("email")
        if not isinstance(email, str) or not email:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"commits[{i}] has no author.email")
        paths = [p for k in ("added", "modified", "removed") for p in (c.get(k) or []) if isinstance(p, str)]
        rows.append({"repo": repo, "sha": c.get("id"), "author_id": author_id(email),
                     "authored_at": c.get("timestamp"), "committed_at": c.get("timestamp"), "is_merge": False,
                     "files_changed": len(paths), "lines_added": 0, "lines_deleted": 0,
                     "languages": sorted({language_of(p) for p in paths})})
    return rows


def skewless_rows(payload: Any) -> list[dict[str, Any]]:
    rows = payload.get("commits") if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadRequest(HTTPStatus.BAD_REQUEST, 'expected {"commits": [{...}, ...]} or a JSON list of commits')
    return rows


ROUTES = {"/events": skewless_rows, "/github": github_rows}


def check_signature(secret: bytes | None, body: bytes, header: str | None) -> None:
    """Refuse (401) a body whose ``X-Hub-Signature-256`` is missing or is not the HMAC-SHA256 of ``secret``."""
    if secret is None:
        return
    if not header or not header.startswith("sha256="):
        raise BadRequest(HTTPStatus.UNAUTHORIZED, "missing X-Hub-Signature-256 (sha256=<HMAC of the body>): this "
                                                  "webhook has a secret")
    want = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, header.removeprefix("sha256=").strip().lower()):
        raise BadRequest(HTTPStatus.UNAUTHORIZED, "X-Hub-Signature-256 does not match the body and the secret")


def make_server(host: str, port: int, log_: EventLog, secret: bytes | None = None) -> ThreadingHTTPServer:
    """The webhook server on ``host:port`` publishing into ``log_`` (``port`` 0: a free port); with ``secret``,
    only signed requests are taken (:func:`check_signature`)."""
    lock = threading.Lock()  # one publish at a time on the shared log client

    class Handler(BaseHTTPRequestHandler):
        server_version = "skewless-webhook"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

        def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(HTTPStatus.OK, {"status": "ok", "log": log_.where})
            else:
                self._answer(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; POST /events or /github"})

        def do_POST(self) -> None:
            try:
                n = self._events()
            except BadRequest as e:
                self._answer(e.status, {"error": str(e)})
            except IngestError as e:
                self._answer(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(e)})
            except SkewlessError as e:  # the log is unreachable: the sender retries later
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
            else:
                self._answer(HTTPStatus.ACCEPTED, {"accepted": n})

        def _events(self) -> int:
            route = ROUTES.get(self.path.split("?", 1)[0])
            if route is None:
                raise BadRequest(HTTPStatus.NOT_FOUND, f"no route {self.path}; POST /events or /github")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                 f"Content-Type {ctype or 'missing'}; send application/json")
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length missing or not a number") from None
            if length > MAX_BODY:
                raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes > {MAX_BODY}")
            raw = self.rfile.read(length)
            check_signature(secret, raw, self.headers.get("X-Hub-Signature-256"))
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({e})") from None
            source = f"webhook {self.path}"
            if self.path.startswith("/github") and self.headers.get("X-GitHub-Event", "push") == "ping":
                return 0
            events = events_of_table(table_of_rows(route(payload), source), source)
            with lock:
                publish(events, log_)
            return len(events)

    return ThreadingHTTPServer((host, port), Handler)
