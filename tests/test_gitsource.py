"""skewless.lake.gitsource: commit-event rows read from real (throwaway) git repositories."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skewless.core import config
from skewless.lake import gitsource as gs
from skewless.lake.gitsource import (
    COMMITS_SCHEMA,
    LANGUAGES,
    NotAGitRepository,
    author_id,
    language_of,
    read_git_repository,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")

SAMPLE = config.PROJECT_ROOT / "src" / "skewless" / "data" / "sample_commits.parquet"
README = config.SHARED_COMMITS.with_name("README.md")

# Mixed case and surrounding spaces: author_id must normalise them away.
ALICE = "  Alice.Dev@Example.COM "
ALICE_ID = "a_2974683d745b"  # "a_" + sha256("alice.dev@example.com")[:12]
ALIAS = "ALIAS@Old.Example"  # collapsed into Alice by the .mailmap committed later
BOB = "bob@example.org"
BOB_ID = "a_686b5e4cf4f9"


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(timezone.utc)


class Repo:
    """A throwaway git repository driven by the git CLI, with fixed identities and dates."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        self.env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            GIT_CONFIG_NOSYSTEM="1",
            LC_ALL="C",
            GIT_AUTHOR_NAME="Some Name",
            GIT_COMMITTER_NAME="Some Committer",
            GIT_COMMITTER_EMAIL="committer@example.net",
        )
        home.mkdir(parents=True, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q")
        self.git("symbolic-ref", "HEAD", "refs/heads/main")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
        r = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode().strip()

    def write(self, rel: str, content: str | bytes) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)

    def dates(self, authored: str, committed: str | None, email: str) -> dict[str, str]:
        return {
            "GIT_AUTHOR_DATE": authored,
            "GIT_COMMITTER_DATE": committed or authored,
            "GIT_AUTHOR_EMAIL": email,
        }

    def commit(self, msg: str, authored: str, committed: str | None = None, email: str = ALICE) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", msg, env=self.dates(authored, committed, email))
        return self.git("rev-parse", "HEAD")

    def merge(self, branch: str, authored: str, email: str = ALICE) -> str:
        self.git("merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}", env=self.dates(authored, None, email))
        return self.git("rev-parse", "HEAD")


def row(
    sha: str,
    authored: str,
    committed: str | None = None,
    *,
    author: str = ALICE_ID,
    merge: bool = False,
    files: int = 0,
    added: int = 0,
    deleted: int = 0,
    languages: list[str] | None = None,
    repo: str = "project",
) -> dict[str, Any]:
    return {
        "repo": repo,
        "sha": sha,
        "author_id": author,
        "authored_at": utc(authored),
        "committed_at": utc(committed or authored),
        "is_merge": merge,
        "files_changed": files,
        "lines_added": added,
        "lines_deleted": deleted,
        "languages": languages or [],
    }


TEN_LINES = "".join(f"line{i}\n" for i in range(10))


@pytest.fixture
def history(tmp_path: Path) -> tuple[Repo, list[dict[str, Any]]]:
    """A repository covering every README rule, and the exact rows expected from it (in committed_at order)."""
    r = Repo(tmp_path / "project", tmp_path / "home")
    rows = []

    # 1. root commit: diffed against the empty tree; Dockerfile / Makefile / .gitignore by file name
    r.write("app.py", TEN_LINES)
    r.write(".gitignore", "*.pyc\n")
    r.write("Dockerfile", "FROM python:3.11\n")
    r.write("Makefile", "all:\n\ttrue\n")
    sha = r.commit("root", "2020-01-01T00:00:00+00:00")
    rows.append(row(sha, "2020-01-01T00:00:00+00:00", files=4, added=14,
                    languages=["Dockerfile", "Makefile", "Other", "Python"]))  # fmt: skip

    # 2. a modified Python file and a new Markdown file; author date with an offset (converted to UTC)
    r.write("app.py", TEN_LINES.replace("line1\n", "LINE1\n") + "line10\n")
    r.write("docs/guide.md", "# Guide\n\nText.\n")
    sha = r.commit("modify", "2020-01-02T12:00:00+02:00")
    rows.append(row(sha, "2020-01-02T10:00:00+00:00", files=2, added=5, deleted=1, languages=["Markdown", "Python"]))

    # 3. a binary file (1 file, 0 lines) next to a text file, by an alias e-mail (mailmap applies to old history)
    r.write("logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x02")
    r.write("notes.txt", "note\n")
    sha = r.commit("binary", "2020-01-03T00:00:00+00:00", email=ALIAS)
    rows.append(row(sha, "2020-01-03T00:00:00+00:00", files=2, added=1, languages=["Other", "Text"]))

    # 4. pure rename into another directory: one file, no lines, language of the NEW path (Markdown, not Text)
    r.git("mv", "notes.txt", "docs/notes.md")
    sha = r.commit("rename", "2020-01-04T00:00:00+00:00")
    rows.append(row(sha, "2020-01-04T00:00:00+00:00", files=1, languages=["Markdown"]))

    # 5. rename with a content change: counted once, only the changed lines, new path's language
    (r.path / "lib").mkdir()
    r.git("mv", "app.py", "lib/app.rb")
    r.write("lib/app.rb", (r.path / "lib/app.rb").read_text().replace("line5\n", "line five\n"))
    sha = r.commit("rename and edit", "2020-01-05T00:00:00+00:00")
    rows.append(row(sha, "2020-01-05T00:00:00+00:00", files=1, added=1, deleted=1, languages=["Ruby"]))

    # 6. a feature branch, a commit on main, and a --no-ff merge (stats 0, languages [])
    r.git("checkout", "-q", "-b", "feature")
    r.write("feature.go", "package feature\n")
    sha = r.commit("feature", "2020-01-06T00:00:00+00:00", email=BOB)
    rows.append(row(sha, "2020-01-06T00:00:00+00:00", author=BOB_ID, files=1, added=1, languages=["Go"]))
    r.git("checkout", "-q", "main")
    r.write("Makefile", "all:\n\ttrue\ntest:\n")
    sha = r.commit("main work", "2020-01-07T00:00:00+00:00")
    rows.append(row(sha, "2020-01-07T00:00:00+00:00", files=1, added=1, languages=["Makefile"]))
    sha = r.merge("feature", "2020-01-08T00:00:00+00:00")
    rows.append(row(sha, "2020-01-08T00:00:00+00:00", merge=True))

    # 7. a .mailmap collapsing the alias into Alice's e-mail (case-insensitive match on the alias)
    r.write(".mailmap", "Alice <alice.dev@example.com> <alias@old.example>\n")
    sha = r.commit("mailmap", "2020-01-09T00:00:00+00:00", email=BOB)
    rows.append(row(sha, "2020-01-09T00:00:00+00:00", author=BOB_ID, files=1, added=1, languages=["Other"]))
    r.write("feature.go", "package feature\n\nfunc F() {}\n")
    sha = r.commit("alias again", "2020-01-10T00:00:00+00:00", email=ALIAS)
    rows.append(row(sha, "2020-01-10T00:00:00+00:00", files=1, added=2, languages=["Go"]))

    # 8. committed 17 months after it was authored (rebased / long-lived PR): sorted by committed_at, so last
    r.write(".gitignore", "*.pyc\n__pycache__/\n")
    late = r.commit("late", "2020-01-11T00:00:00+00:00", committed="2021-06-01T08:30:00+00:00")
    late_row = row(late, "2020-01-11T00:00:00+00:00", "2021-06-01T08:30:00+00:00", files=1, added=1,
                   languages=["Other"])  # fmt: skip

    # 9. an empty (non-merge) commit: 0 files, languages []
    sha = r.commit("empty", "2020-01-12T00:00:00+00:00", committed="2020-01-12T00:00:00+00:00")
    rows.append(row(sha, "2020-01-12T00:00:00+00:00"))
    rows.append(late_row)
    return r, rows


def test_rows_are_exact(history: tuple[Repo, list[dict[str, Any]]]) -> None:
    repo, expected = history
    table = read_git_repository(repo.path)
    assert table.schema.equals(COMMITS_SCHEMA)
    assert table.to_pylist() == expected


def test_no_names_or_emails_in_the_rows(history: tuple[Repo, list[dict[str, Any]]]) -> None:
    repo, _ = history
    table = read_git_repository(repo.path)
    text = repr(table.to_pylist()).lower()
    for secret in ("alice", "alias", "bob", "@", "some name", "committer"):
        assert secret not in text


def test_bare_clone_and_dot_git_give_the_same_rows(history: tuple[Repo, list[dict[str, Any]]], tmp_path: Path) -> None:
    repo, expected = history
    bare = tmp_path / "project.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True, env=repo.env)
    # a bare repository has no work tree: its .mailmap comes from HEAD
    assert read_git_repository(bare).to_pylist() == expected  # name "project.git" -> "project"
    assert read_git_repository(repo.path / ".git").to_pylist() == expected
    assert read_git_repository(str(repo.path), repo_name="acme/other").column("repo").to_pylist() == [
        "acme/other"
    ] * len(expected)


def test_reads_head_only(history: tuple[Repo, list[dict[str, Any]]]) -> None:
    repo, expected = history
    repo.git("checkout", "-q", "-b", "unmerged")
    repo.write("later.rs", "fn main() {}\n")
    repo.commit("not on main", "2020-02-01T00:00:00+00:00")
    repo.git("checkout", "-q", "main")
    assert read_git_repository(repo.path).to_pylist() == expected


def test_odd_paths(tmp_path: Path) -> None:
    """Paths with spaces, tabs, non-ASCII and a literal ' => ' survive (-z), renames use the new path."""
    r = Repo(tmp_path / "odd", tmp_path / "home")
    r.write("dir with space/naïve.PY", "x = 1\n")
    r.write("tab\there.sh", "echo\n")
    r.write("x => y.md", "a\nb\n")
    r.write("docker/Dockerfile.dev", "FROM scratch\n")
    root = r.commit("root", "2021-03-01T00:00:00+00:00")
    r.git("mv", "x => y.md", "{z}.rs")
    moved = r.commit("rename", "2021-03-02T00:00:00+00:00")
    rows = read_git_repository(r.path).to_pylist()
    assert [(x["sha"], x["files_changed"], x["lines_added"], x["lines_deleted"], x["languages"]) for x in rows] == [
        (root, 4, 5, 0, ["Dockerfile", "Markdown", "Python", "Shell"]),
        (moved, 1, 0, 0, ["Rust"]),
    ]


def test_missing_blob_counts_as_a_changed_file_with_zero_lines(tmp_path: Path) -> None:
    """Snapshots lacking some blobs still read (README: those versions count as files with 0 lines)."""
    r = Repo(tmp_path / "holes", tmp_path / "home")
    r.write("kept.py", "a\nb\n")
    r.write("big.json", "{}\n" * 3)
    root = r.commit("root", "2022-01-01T00:00:00+00:00")
    r.write("big.json", "{}\n" * 5)
    r.write("kept.py", "a\nb\nc\n")
    second = r.commit("grow", "2022-01-02T00:00:00+00:00")
    r.write("kept.py", "a\nb\nc\nd\n")
    third = r.commit("after", "2022-01-03T00:00:00+00:00")  # read before git hits the hole (log is newest first)
    blob = r.git("rev-parse", f"{root}:big.json")
    (r.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    calls: list[int] = []
    with pytest.warns(UserWarning, match="1 object"):
        rows = read_git_repository(r.path, progress=calls.append).to_pylist()
    assert [(x["sha"], x["files_changed"], x["lines_added"], x["lines_deleted"], x["languages"]) for x in rows] == [
        (root, 2, 2, 0, ["JSON", "Python"]),  # big.json's missing version: a changed file with 0 lines
        (second, 2, 1, 0, ["JSON", "Python"]),  # big.json's diff has a missing side: 0 lines, like a binary file
        (third, 1, 1, 0, ["Python"]),
    ]
    assert calls == [3]
    assert not (r.path / ".git" / "refs" / "replace").exists()  # the repository itself is never written to


def test_progress_every_thousand_commits(tmp_path: Path) -> None:
    r = Repo(tmp_path / "many", tmp_path / "home")
    stream = []
    for i in range(2500):
        data = f"{i}\n".encode()
        stream.append(
            b"commit refs/heads/main\n"
            + f"author A <a@example.com> {1_600_000_000 + i} +0000\n".encode()
            + f"committer A <a@example.com> {1_600_000_000 + i} +0000\n".encode()
            + b"data 1\nx\n"
            + f"M 100644 inline f.txt\ndata {len(data)}\n".encode()
            + data
            + b"\n"
        )
    r.git("fast-import", "--quiet", input=b"".join(stream))
    calls: list[int] = []
    table = read_git_repository(r.path, progress=calls.append)
    assert calls == [1000, 2000, 2500]
    assert table.num_rows == 2500
    assert table.column("files_changed").to_pylist() == [1] * 2500
    assert table.column("lines_added").to_pylist() == [1] * 2500
    assert table.column("lines_deleted").to_pylist() == [0] + [1] * 2499


# --- repository names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://github.com/acme/widgets.git", "git@github.com:acme/widgets.git"]
)
def test_repo_name_from_origin(tmp_path: Path, url: str) -> None:
    r = Repo(tmp_path / "checkout", tmp_path / "home")
    r.write("a.py", "x\n")
    r.commit("root", "2020-01-01T00:00:00+00:00")
    r.git("remote", "add", "origin", url)
    assert read_git_repository(r.path).column("repo").to_pylist() == ["acme/widgets"]


def test_repo_name_falls_back_to_the_directory(tmp_path: Path) -> None:
    r = Repo(tmp_path / "my-project", tmp_path / "home")
    r.write("a.py", "x\n")
    r.commit("root", "2020-01-01T00:00:00+00:00")
    assert read_git_repository(r.path).column("repo").to_pylist() == ["my-project"]
    r.git("remote", "add", "origin", "/srv/git/elsewhere.git")
    assert read_git_repository(r.path).column("repo").to_pylist() == ["my-project"]


@pytest.mark.parametrize(
    "url, name",
    [
        ("https://github.com/acme/widgets.git", "acme/widgets"),
        ("https://github.com/acme/widgets", "acme/widgets"),
        ("https://github.com/acme/widgets/", "acme/widgets"),
        ("https://user:token@github.com/acme/widgets.git", "acme/widgets"),
        ("git@github.com:acme/widgets.git", "acme/widgets"),
        ("ssh://git@github.com/acme/widgets.git", "acme/widgets"),
        ("ssh://git@github.com:22/acme/widgets.git\n", "acme/widgets"),
        ("git://github.com/acme/widgets.git", "acme/widgets"),
        ("https://gitlab.com/acme/widgets.git", "acme/widgets"),
        ("git@gitlab.com:acme/sub/widgets.git", "acme/sub/widgets"),
        ("https://gitlab.example.org/acme/widgets.git", "acme/widgets"),
        ("https://bitbucket.org/acme/widgets.git", None),
        ("/srv/git/widgets.git", None),
        ("file:///srv/git/widgets.git", None),
        ("https://github.com/acme", None),
        ("", None),
    ],
)
def test_repo_name_from_url(url: str, name: str | None) -> None:
    assert gs._repo_name_from_url(url) == name


# --- not a repository -----------------------------------------------------------------------------------------


def test_plain_directory_is_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepository, match=re.escape(str(plain))):
        read_git_repository(plain)


def test_missing_path_is_not_a_repository(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(NotAGitRepository, match=re.escape(str(missing))):
        read_git_repository(missing)


def test_file_is_not_a_repository(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotAGitRepository, match=re.escape(str(f))):
        read_git_repository(f)


def test_repository_without_commits(tmp_path: Path) -> None:
    r = Repo(tmp_path / "empty", tmp_path / "home")
    with pytest.raises(NotAGitRepository, match="without commits"):
        read_git_repository(r.path)


def test_directory_inside_a_work_tree_is_not_a_repository(tmp_path: Path) -> None:
    """An enclosing repository is never picked up (no silent read of the wrong history)."""
    r = Repo(tmp_path / "outer", tmp_path / "home")
    r.write("sub/a.py", "x\n")
    r.commit("root", "2020-01-01T00:00:00+00:00")
    (r.path / "plain").mkdir()
    for p in (r.path / "sub", r.path / "plain"):
        with pytest.raises(NotAGitRepository, match=re.escape(str(p))):
            read_git_repository(p)


def test_not_a_repository_is_a_value_error() -> None:
    assert issubclass(NotAGitRepository, ValueError)


# --- this project's own history ---------------------------------------------------------------------------------


def test_reads_this_projects_own_repository() -> None:
    root = config.PROJECT_ROOT
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    table = read_git_repository(root)
    assert table.schema.equals(pq.read_schema(SAMPLE))
    assert table.schema == COMMITS_SCHEMA
    assert table.num_rows >= 1
    shas = table.column("sha").to_pylist()
    assert len(set(shas)) == len(shas)
    assert all(re.fullmatch(r"[0-9a-f]{40}", s) for s in shas)
    assert all(re.fullmatch(r"a_[0-9a-f]{12}", a) for a in table.column("author_id").to_pylist())
    committed = table.column("committed_at").to_pylist()
    assert committed == sorted(committed)


# --- schema, identity, language mapping --------------------------------------------------------------------------


def test_schema_matches_the_sample_parquet_exactly() -> None:
    sample = pq.read_schema(SAMPLE)
    assert COMMITS_SCHEMA.equals(sample)
    assert [(f.name, str(f.type), f.nullable) for f in COMMITS_SCHEMA] == [
        (f.name, str(f.type), f.nullable) for f in sample
    ]
    assert COMMITS_SCHEMA.field("languages").type == pa.list_(pa.field("element", pa.string()))


def test_author_id() -> None:
    assert author_id("alice.dev@example.com") == ALICE_ID
    assert author_id(ALICE) == ALICE_ID
    assert author_id("\tALICE.DEV@EXAMPLE.COM\n") == ALICE_ID
    assert author_id("") == "a_" + hashlib.sha256(b"").hexdigest()[:12] == "a_e3b0c44298fc"
    assert author_id("Zoë@example.com") == "a_" + hashlib.sha256("zoë@example.com".encode()).hexdigest()[:12]
    assert gs._author_id_raw(b" Alice.Dev@Example.COM ") == ALICE_ID


@pytest.mark.parametrize(
    "path, language",
    [
        ("src/app.py", "Python"),
        ("SRC/APP.PY", "Python"),
        ("stubs/x.pyi", "Python"),
        ("include/x.h", "C"),
        ("a/b.hpp", "C++"),
        ("CMakeLists.txt", "CMake"),
        ("sub/cmakelists.TXT", "CMake"),
        ("notes.txt", "Text"),
        ("build.cmake", "CMake"),
        ("Dockerfile", "Dockerfile"),
        ("docker/Dockerfile.dev", "Dockerfile"),
        ("dockerfile-alpine", "Dockerfile"),
        ("app.dockerfile", "Dockerfile"),
        (".dockerignore", "Other"),
        ("go.mod", "Go"),
        ("go.sum", "Go"),
        ("Makefile", "Makefile"),
        ("GNUmakefile", "Other"),
        ("Gemfile", "Ruby"),
        ("Rakefile", "Ruby"),
        ("Gemfile.lock", "Other"),
        ("x.gemspec", "Ruby"),
        ("config.ru", "Ruby"),
        ("README.rst", "Markdown"),
        ("doc/index.ADOC", "Markdown"),
        ("README.rdoc", "Markdown"),
        (".gitignore", "Other"),
        (".github/workflows/ci.yml", "YAML"),
        (".eslintrc.json", "JSON"),
        ("LICENSE", "Other"),
        ("CHANGELOG", "Other"),
        ("logo.svg", "Other"),
        ("model.pbtxt", "Other"),
        ("data.csv", "Other"),
        ("archive.tar.gz", "Other"),
        ("trailing.", "Other"),
        ("nb.ipynb", "Jupyter Notebook"),
        ("x.pyx", "Cython"),
        ("lib.rs", "Rust"),
        ("App.vue", "Vue"),
        ("App.svelte", "Svelte"),
        ("a.mts", "TypeScript"),
        ("view.html.erb", "ERB"),
        ("build.gradle", "Groovy"),
        ("build.gradle.kts", "Kotlin"),
        ("setup.cfg", "INI"),
        ("pyproject.toml", "TOML"),
        ("schema.proto", "Protocol Buffers"),
        ("q.sql", "SQL"),
        ("a.scala", "Scala"),
        ("run.zsh", "Shell"),
        ("style.scss", "CSS"),
        ("a.coffee", "CoffeeScript"),
        ("pom.xml", "XML"),
        ("Main.java", "Java"),
        ("a.cjs", "JavaScript"),
        ("", "Other"),
    ],
)
def test_language_of(path: str, language: str) -> None:
    assert language_of(path) == language


def test_languages_table_matches_the_readme() -> None:
    """LANGUAGES holds exactly the README's mapping table (skipped when shared/ is not next to the project)."""
    if not README.exists():
        pytest.skip("shared/data/commits/README.md not available")
    table: dict[str, str] = {}
    section = README.read_text().split("## Language mapping", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("language", "Other") or set(cells[0]) <= set("-"):
            continue
        for entry in re.findall(r"`([^`]+)`", cells[1]):
            table[entry] = cells[0]
    assert table == LANGUAGES
    assert len(set(LANGUAGES.values())) == 33
