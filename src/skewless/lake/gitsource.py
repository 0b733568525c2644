"""Read a local git repository's history into commit-event rows (the ``commits.parquet`` format).

One row per commit reachable from the ingested ref (the default branch unless one is named), with exactly the
columns and semantics of ``shared/data/commits/README.md``:

* ``author_id`` is ``"a_" + sha256(lower(strip(author_email)))[:12]``; the e-mail is the mailmap-applied author
  e-mail. Names are never requested from git; each e-mail is hashed as soon as it is read and never kept.
* diff stats come from ``git log --numstat -M`` (one parent; the root commit against the empty tree). Merge commits
  have no diff: 0 files, 0 lines, ``languages = []``. Binary files count as one file with 0 lines. A detected
  rename counts once and its language is that of the new path.
* ``languages`` is the sorted list of distinct languages (see :data:`LANGUAGES`) of the changed paths.

The whole history is read with a single streaming ``git log`` process (plus a few one-shot ``git rev-parse`` /
``git remote`` calls); Python adds a few seconds per 100k commits to git's own diff time (rails/rails, 99k
commits: about 25 s in all). Rows are identical to ``commits.parquet`` for the repositories checked against it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from skewless.core.errors import SkewlessError

__all__ = [
    "LANGUAGES",
    "OTHER",
    "EXTENSION_LANGUAGE",
    "FILENAME_LANGUAGE",
    "COMMITS_SCHEMA",
    "GitHistory",
    "NotAGitRepository",
    "author_id",
    "language_of",
    "read_git_history",
    "read_git_repository",
]

# --------------------------------------------------------------------------------------------------------------
# Language mapping (README "Language mapping")
# --------------------------------------------------------------------------------------------------------------

#: Language of everything not listed (dot-files, extension-less files, images, lock files, ``.svg`` ...).
OTHER = "Other"

#: The README's mapping as data. Keys starting with ``.`` are lower-cased file extensions (the text after the last
#: ``.`` of the file name); the other keys are exact lower-cased file names. File names starting with
#: ``dockerfile`` are also Dockerfile (see :func:`language_of`); anything else is :data:`OTHER`.
LANGUAGES: dict[str, str] = {
    # C
    ".c": "C", ".h": "C",
    # C++
    ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++", ".hxx": "C++",
    # CMake
    ".cmake": "CMake", "cmakelists.txt": "CMake",
    # CSS
    ".css": "CSS", ".scss": "CSS", ".sass": "CSS", ".less": "CSS",
    # CoffeeScript
    ".coffee": "CoffeeScript",
    # Cython
    ".pyx": "Cython", ".pxd": "Cython", ".pxi": "Cython",
    # Dockerfile (plus every file name starting with "dockerfile")
    ".dockerfile": "Dockerfile", "dockerfile": "Dockerfile",
    # ERB
    ".erb": "ERB",
    # Go
    ".go": "Go", "go.mod": "Go", "go.sum": "Go",
    # Groovy
    ".groovy": "Groovy", ".gradle": "Groovy",
    # HTML
    ".html": "HTML", ".htm": "HTML",
    # INI
    ".cfg": "INI", ".ini": "INI",
    # JSON
    ".json": "JSON",
    # Java
    ".java": "Java",
    # JavaScript
    ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript", ".jsx": "JavaScript",
    # Jupyter Notebook
    ".ipynb": "Jupyter Notebook",
    # Kotlin
    ".kt": "Kotlin", ".kts": "Kotlin",
    # Makefile
    "makefile": "Makefile",
    # Markdown (prose documentation markup)
    ".md": "Markdown", ".markdown": "Markdown", ".rst": "Markdown", ".rdoc": "Markdown", ".textile": "Markdown",
    ".adoc": "Markdown",
    # Protocol Buffers
    ".proto": "Protocol Buffers",
    # Python
    ".py": "Python", ".pyi": "Python", ".pyw": "Python",
    # Ruby
    ".rb": "Ruby", ".rake": "Ruby", ".gemspec": "Ruby", ".ru": "Ruby", "gemfile": "Ruby", "rakefile": "Ruby",
    # Rust
    ".rs": "Rust",
    # SQL
    ".sql": "SQL",
    # Scala
    ".scala": "Scala",
    # Shell
    ".sh": "Shell", ".bash": "Shell", ".zsh": "Shell",
    # Svelte
    ".svelte": "Svelte",
    # TOML
    ".toml": "TOML",
    # Text
    ".txt": "Text",
    # TypeScript
    ".ts": "TypeScript", ".tsx": "TypeScript", ".mts": "TypeScript", ".cts": "TypeScript",
    # Vue
    ".vue": "Vue",
    # XML
    ".xml": "XML",
    # YAML
    ".yaml": "YAML", ".yml": "YAML",
}  # fmt: skip

#: Lower-cased extension (without the dot) -> language.
EXTENSION_LANGUAGE: dict[str, str] = {k[1:]: v for k, v in LANGUAGES.items() if k.startswith(".")}
#: Exact lower-cased file name -> language.
FILENAME_LANGUAGE: dict[str, str] = {k: v for k, v in LANGUAGES.items() if not k.startswith(".")}
_DOCKERFILE_PREFIX = "dockerfile"


def language_of(path: str) -> str:
    """Language of a repository path, by its last path component (README "Language mapping").

    Exact lower-cased file names (``Makefile``, ``CMakeLists.txt``, ``go.mod`` ...) first, then names starting with
    ``dockerfile`` (``Dockerfile.dev``), then the lower-cased extension after the last ``.``. A name whose only dots
    are leading ones (``.gitignore``) or that has no dot (``LICENSE``) has no extension: ``Other``.
    """
    name = path.rstrip("/").rpartition("/")[2].lower()
    lang = FILENAME_LANGUAGE.get(name)
    if lang is not None:
        return lang
    if name.startswith(_DOCKERFILE_PREFIX):
        return "Dockerfile"
    stem = name.lstrip(".")
    dot = stem.rfind(".")
    if dot < 0:
        return OTHER
    return EXTENSION_LANGUAGE.get(stem[dot + 1 :], OTHER)


# --------------------------------------------------------------------------------------------------------------
# Schema and identity
# --------------------------------------------------------------------------------------------------------------

_TS = pa.timestamp("us", tz="UTC")

#: Arrow schema of a commit-event table (identical to ``src/skewless/data/sample_commits.parquet``).
COMMITS_SCHEMA = pa.schema(
    [
        pa.field("repo", pa.string()),
        pa.field("sha", pa.string()),
        pa.field("author_id", pa.string()),
        pa.field("authored_at", _TS),
        pa.field("committed_at", _TS),
        pa.field("is_merge", pa.bool_()),
        pa.field("files_changed", pa.int32()),
        pa.field("lines_added", pa.int32()),
        pa.field("lines_deleted", pa.int32()),
        pa.field("languages", pa.list_(pa.field("element", pa.string()))),
    ]
)


def author_id(email: str) -> str:
    """Pseudonymous author id: ``"a_"`` + first 12 hex of sha256 of the stripped, lower-cased e-mail (UTF-8)."""
    return "a_" + hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:12]


def _author_id_raw(email: bytes) -> str:
    """:func:`author_id` of an e-mail as raw bytes from git (invalid UTF-8 bytes are hashed as they are)."""
    text = email.decode("utf-8", "surrogateescape").strip().lower()
    return "a_" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


class NotAGitRepository(SkewlessError, ValueError):
    """The path is missing, is not a git work tree / bare repository, or its HEAD has no commit."""


# --------------------------------------------------------------------------------------------------------------
# git plumbing
# --------------------------------------------------------------------------------------------------------------

#: ``-c`` settings pinned on every git call, so that a user's configuration cannot change the rows.
_GIT_CONFIG = (
    "core.quotepath=off",
    "core.pager=cat",
    "color.ui=false",
    "log.showSignature=false",
    "diff.renameLimit=10000",  # README: git's default -M with diff.renameLimit=10000
    "diff.algorithm=myers",  # line counts depend on the diff algorithm: git's default one
    "diff.relative=false",
    "diff.ignoreSubmodules=none",
)


def _git_env(path: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_NAMESPACE",
              "GIT_COMMON_DIR", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG_PARAMETERS",
              "GIT_REPLACE_REF_BASE", "GIT_NO_REPLACE_OBJECTS"):  # fmt: skip
        env.pop(k, None)
    env.update(
        LC_ALL="C",
        LANG="C",
        GIT_PAGER="cat",
        PAGER="cat",
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        # Only `path` itself may be the repository: never discover an enclosing one (a plain directory inside
        # some work tree is still not a git repository).
        GIT_CEILING_DIRECTORIES=os.path.dirname(path),
    )
    return env


def _git_cmd(path: str, *args: str) -> list[str]:
    cmd = ["git", "--no-pager", "-C", path]
    for c in _GIT_CONFIG:
        cmd += ["-c", c]
    return cmd + list(args)


def _git(
    path: str, env: dict[str, str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        _git_cmd(path, *args),
        env=env,
        input=input,
        capture_output=True,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class _Repo:
    path: str  # real path of the work tree top or of the bare repository / .git directory
    env: dict[str, str]
    head: str  # commit id the ingested ref resolves to (read once, so a concurrent commit cannot mix two states)
    work_tree: bool
    name_dir: str  # directory whose name is the fallback repo name
    ref: str = "HEAD"  # the ref whose history is read (full name, e.g. refs/heads/main), see _default_ref


def _resolve_repository(path: str | os.PathLike[str], ref: str | None = None) -> _Repo:
    """Check that ``path`` is a git repository with commits and resolve the ref to read (``ref``, else the default
    branch, see :func:`_default_ref`); raises :class:`NotAGitRepository`."""
    shown = os.fspath(path)
    p = os.path.realpath(shown)
    if not os.path.exists(p):
        raise NotAGitRepository(f"{shown}: no such file or directory")
    if not os.path.isdir(p):
        raise NotAGitRepository(f"{shown}: not a directory, so not a git repository")
    env = _git_env(p)
    r = _git(p, env, "rev-parse", "--is-bare-repository", "--is-inside-work-tree", "--show-prefix")
    if r.returncode != 0:
        msg = r.stderr.decode("utf-8", "replace").strip()
        raise NotAGitRepository(f"{shown}: not a git work tree or bare repository ({msg})")
    lines = r.stdout.decode("utf-8", "surrogateescape").splitlines()
    work_tree = len(lines) > 1 and lines[1] == "true"
    if work_tree and len(lines) > 2 and lines[2]:  # defensive: GIT_CEILING_DIRECTORIES already prevents this
        raise NotAGitRepository(f"{shown}: a sub-directory of a git work tree, not its top")
    if ref is not None:
        full = _full_ref(p, env, ref)
        if full is None:
            raise NotAGitRepository(f"{shown}: no branch, tag or commit named {ref!r} (--ref)")
    else:
        full = _default_ref(p, env, bare=not work_tree)
    r = _git(p, env, "rev-parse", "--verify", "--quiet", f"{full}^{{commit}}")
    if r.returncode != 0:
        if full == "HEAD" or _git(p, env, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").returncode != 0:
            raise NotAGitRepository(f"{shown}: git repository without commits (HEAD is unborn)")
        raise NotAGitRepository(f"{shown}: {full} does not point to a commit")
    head = r.stdout.decode("ascii").strip()
    name_dir = p
    if not work_tree and os.path.basename(p) == ".git":
        name_dir = os.path.dirname(p)
    return _Repo(path=p, env=env, head=head, work_tree=work_tree, name_dir=name_dir, ref=full)


def _full_ref(path: str, env: dict[str, str], ref: str) -> str | None:
    """The full name of ``ref`` (``main`` -> ``refs/heads/main``), the id itself for a commit id, None if unknown."""
    r = _git(path, env, "rev-parse", "--verify", "--quiet", "--symbolic-full-name", ref)
    name = r.stdout.decode("utf-8", "surrogateescape").strip() if r.returncode == 0 else ""
    if name:
        return name
    r = _git(path, env, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return r.stdout.decode("ascii").strip() if r.returncode == 0 else None


def _default_ref(path: str, env: dict[str, str], bare: bool) -> str:
    """The repository's default branch: the history that skewless ingests when no ``--ref`` is given.

    1. the remote default branch ``origin/HEAD`` points to, when the clone recorded it (``git clone`` does);
    2. in a bare repository or mirror: ``HEAD`` (there it names the default branch);
    3. in a work tree: the local ``main``, else ``master``, else ``HEAD`` (whatever is checked out).
    A feature branch that is checked out is therefore not ingested unless asked for with ``--ref``.
    """
    r = _git(path, env, "symbolic-ref", "--quiet", "refs/remotes/origin/HEAD")
    if r.returncode == 0 and r.stdout.strip():
        return r.stdout.decode("utf-8", "surrogateescape").strip()
    if bare:
        r = _git(path, env, "symbolic-ref", "--quiet", "HEAD")
        return r.stdout.decode("utf-8", "surrogateescape").strip() if r.returncode == 0 else "HEAD"
    for branch in ("refs/heads/main", "refs/heads/master"):
        if _git(path, env, "rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}").returncode == 0:
            return branch
    r = _git(path, env, "symbolic-ref", "--quiet", "HEAD")
    return r.stdout.decode("utf-8", "surrogateescape").strip() if r.returncode == 0 else "HEAD"


_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^/\s].*)$")


def _repo_name_from_url(url: str) -> str | None:
    """``owner/name`` of a GitHub / GitLab remote URL (https, ssh://, git://, scp-like ``git@host:o/n``), else None.

    GitLab sub-groups are kept (``group/sub/project``). Credentials in the URL are never returned.
    """
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        repo_path = parts.path
    else:
        m = _SCP_LIKE.match(url)
        if m is None:
            return None
        host, repo_path = m.group("host").lower(), m.group("path")
    if not any(label.startswith(("github", "gitlab")) for label in host.split(".")):
        return None
    repo_path = repo_path.strip("/")
    if repo_path.endswith(".git"):
        repo_path = repo_path[: -len(".git")]
    segments = [s for s in repo_path.split("/") if s]
    if len(segments) < 2 or any(s in (".", "..") for s in segments):
        return None
    if "gitlab" in host:
        return "/".join(segments)
    return "/".join(segments[:2])


def _default_repo_name(repo: _Repo) -> tuple[str, str]:
    """The derived name and where it came from: ``"remote"`` (origin's GitHub/GitLab URL) or ``"directory"``."""
    r = _git(repo.path, repo.env, "remote", "get-url", "origin")
    if r.returncode == 0:
        name = _repo_name_from_url(r.stdout.decode("utf-8", "replace"))
        if name:
            return name, "remote"
    base = os.path.basename(repo.name_dir.rstrip(os.sep)) or repo.name_dir
    if base.endswith(".git") and len(base) > len(".git"):
        base = base[: -len(".git")]
    return base, "directory"


# --------------------------------------------------------------------------------------------------------------
# The log stream
# --------------------------------------------------------------------------------------------------------------

# Header of each commit: RS, then NUL-separated fields. With -z, numstat entries are NUL-terminated
# ("added\tdeleted\tpath"), a rename is "added\tdeleted\t" NUL old NUL new, and the first entry of a commit is
# preceded by a newline. No commit message is requested, so nothing but the fields below ever reaches Python.
_FORMAT = "%x1e%H%x00%P%x00%aE%x00%at%x00%ct"
_RS = 0x1E
_CHUNK = 1 << 20
_PROGRESS_EVERY = 1000


#: Seconds since the epoch that a timestamp[us] column holds (years 1 to 9999).
_SECONDS_RANGE = (-62_135_596_800, 253_402_300_799)


def _epoch_seconds(raw: bytes) -> int | None:
    """A date field of ``git log`` as seconds since the epoch, or None when git could not format it.

    git prints an empty field for a date it cannot represent (a date before 1970 in a hand-made commit object) and
    the raw digits for absurd ones; both become null here, and ingest names the commit and the rule."""
    try:
        v = int(raw)
    except ValueError:
        return None
    return v if _SECONDS_RANGE[0] <= v <= _SECONDS_RANGE[1] else None


def _tokens(stream: IO[bytes]) -> Iterator[bytes]:
    """NUL-separated tokens of a byte stream, as soon as they arrive."""
    rest = b""
    while True:
        chunk = stream.read1(_CHUNK)  # type: ignore[attr-defined,unused-ignore]
        if not chunk:
            break
        parts = (rest + chunk).split(b"\0")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


@dataclass
class _Columns:
    sha: list[str] = field(default_factory=list)
    author_id: list[str] = field(default_factory=list)
    authored_at: list[int | None] = field(default_factory=list)  # unix seconds; None: git could not format it
    committed_at: list[int | None] = field(default_factory=list)
    is_merge: list[bool] = field(default_factory=list)
    files_changed: list[int] = field(default_factory=list)
    lines_added: list[int] = field(default_factory=list)
    lines_deleted: list[int] = field(default_factory=list)
    languages: list[list[str]] = field(default_factory=list)

    def extend(self, other: _Columns) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


class _LogFailed(Exception):
    """``git log`` failed; ``partial`` holds the commits completely read before the failure (in log order)."""

    def __init__(self, message: str, partial: _Columns) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial


def _log_cmd(git_path: str, head: str, mailmap_file: str, revs_on_stdin: bool = False) -> list[str]:
    """The one ``git log``: the history of ``head``, or (``revs_on_stdin``) exactly the commits listed on stdin."""
    return _git_cmd(
        git_path,
        # Only the repository's own .mailmap: the work tree's (read by git itself) and the one committed at HEAD;
        # never a user-wide mailmap.file.
        "-c",
        f"mailmap.file={mailmap_file}",
        "-c",
        f"mailmap.blob={head}:.mailmap",
        "log",
        "--use-mailmap",
        "--root",  # the root commit is diffed against the empty tree
        "--numstat",
        "-M",
        "-z",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--encoding=UTF-8",
        f"--format=tformat:{_FORMAT}",
        *(("--no-walk=unsorted", "--stdin") if revs_on_stdin else (head,)),
        "--",
    )


def _read_log(
    cmd: list[str],
    env: dict[str, str],
    progress: Callable[[int], None],
    stdin: IO[bytes] | None = None,
    offset: int = 0,
) -> _Columns:
    """Run one ``git log`` and parse its stream; raises :class:`_LogFailed` when git fails.

    ``offset`` commits were read before this call (for progress counts only)."""
    out = _Columns()
    shas, authors, authored, committed = out.sha, out.author_id, out.authored_at, out.committed_at
    merges, files, added, deleted, languages = (
        out.is_merge, out.files_changed, out.lines_added, out.lines_deleted, out.languages
    )  # fmt: skip
    lang_cache: dict[bytes, str] = {}

    def lang(raw_path: bytes) -> str:
        base = raw_path.rpartition(b"/")[2]
        got = lang_cache.get(base)
        if got is None:
            got = lang_cache[base] = language_of(base.decode("utf-8", "surrogateescape"))
        return got

    n_files = n_add = n_del = 0
    langs: set[str] = set()
    in_commit = is_merge = False

    def finish() -> None:
        merge = is_merge  # merges have no diff stats, whatever git printed
        files.append(0 if merge else n_files)
        added.append(0 if merge else n_add)
        deleted.append(0 if merge else n_del)
        languages.append([] if merge else sorted(langs))
        if (offset + len(shas)) % _PROGRESS_EVERY == 0:
            progress(offset + len(shas))

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        truncated = False
        try:
            it = _tokens(proc.stdout)
            for tok in it:
                if not tok:
                    continue
                if tok[0] == _RS:  # commit header: RS sha NUL parents NUL email NUL author-time NUL commit-time
                    if in_commit:
                        finish()
                    in_commit = False
                    sha = tok[1:].decode("ascii")
                    parents = next(it)
                    email = next(it)
                    at = _epoch_seconds(next(it))
                    ct = _epoch_seconds(next(it))
                    shas.append(sha)
                    authors.append(_author_id_raw(email))
                    authored.append(at)
                    committed.append(ct)
                    is_merge = b" " in parents.strip()
                    merges.append(is_merge)
                    n_files = n_add = n_del = 0
                    langs = set()
                    in_commit = True
                    continue
                if not in_commit:
                    raise RuntimeError(f"unexpected git log output outside a commit: {tok[:80]!r}")
                # numstat entry: "added TAB deleted TAB path"; for a rename "added TAB deleted TAB" then old, new
                if tok[0] == 0x0A:  # the newline between a header and its first numstat entry
                    tok = tok[1:]
                    if not tok:
                        continue
                a, _, rest = tok.partition(b"\t")
                d, _, fpath = rest.partition(b"\t")
                if not fpath:
                    next(it)  # old path
                    fpath = next(it)  # new path: a rename's language is the new path's
                n_files += 1
                if a != b"-":  # "-" for binary files: 0 lines
                    n_add += int(a)
                if d != b"-":
                    n_del += int(d)
                langs.add(lang(fpath))
        except StopIteration:
            truncated = True
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        rc = proc.wait()
        if rc != 0 or truncated:
            err.seek(0)
            msg = err.read().decode("utf-8", "replace").strip()
            if in_commit:  # the commit being read when git died may be incomplete: not part of the result
                for column in out.__dataclass_fields__:
                    del getattr(out, column)[len(files) :]
            message = f"git log exited with {rc}: {msg}" if rc else f"git log output ended mid-commit {msg}"
            raise _LogFailed(message, out)
    if in_commit:
        finish()
    return out


def _missing_objects(repo: _Repo) -> list[str]:
    """Ids of objects reachable from HEAD that the object store lacks (e.g. snapshots without large blobs)."""
    cmd = _git_cmd(repo.path, "rev-list", "--objects", "--missing=print", repo.head, "--")
    missing: list[str] = []
    with subprocess.Popen(
        cmd, env=repo.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"?"):
                missing.append(line[1:].strip().decode("ascii"))
    return missing


def _shadow_repository(repo: _Repo, tmp: str, missing: list[str]) -> str:
    """A throwaway bare repository borrowing ``repo``'s objects (alternates) in which every missing object is
    replaced (``refs/replace``) by a binary placeholder blob: git then counts those file versions as changed
    binary files with 0 lines, as ``commits.parquet`` does. ``repo`` itself is never written to."""
    shadow = os.path.join(tmp, "shadow.git")
    env = _git_env(shadow)
    r = subprocess.run(["git", "init", "--quiet", "--bare", "--template=", shadow], env=env, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"cannot create a scratch repository: {r.stderr.decode('utf-8', 'replace').strip()}")
    objects = _git(repo.path, repo.env, "rev-parse", "--git-path", "objects").stdout.decode("utf-8", "surrogateescape")
    objects = os.path.realpath(os.path.join(repo.path, objects.strip()))
    info = os.path.join(shadow, "objects", "info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "alternates"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(objects + "\n")
    r = _git(shadow, env, "hash-object", "-w", "--stdin", input=b"skewless: object missing from the store\0")
    placeholder = r.stdout.decode("ascii").strip()
    if r.returncode != 0 or not placeholder:
        raise RuntimeError(f"cannot write a placeholder blob: {r.stderr.decode('utf-8', 'replace').strip()}")
    updates = "".join(f"update refs/replace/{oid} {placeholder}\n" for oid in missing).encode("ascii")
    r = _git(shadow, env, "update-ref", "--stdin", input=updates)
    if r.returncode != 0:
        raise RuntimeError(f"cannot write replace refs: {r.stderr.decode('utf-8', 'replace').strip()}")
    return shadow


def _read_log_with_missing_objects(repo: _Repo, failed: _LogFailed, report: Callable[[int], None]) -> _Columns:
    """Finish a ``git log`` that died on objects missing from the store.

    The commits read before the failure are kept; the rest (the same walk, listed by ``git rev-list``) are read by
    one more ``git log`` in a shadow repository where each missing object is a binary placeholder."""
    missing = _missing_objects(repo)
    if not missing:
        raise RuntimeError(f"reading the history of {repo.path} failed: {failed.message}") from None
    warnings.warn(
        f"{repo.path}: {len(missing)} object(s) reachable from HEAD are missing from the object store; "
        "their file versions count as changed files with 0 lines",
        stacklevel=3,
    )
    r = _git(repo.path, repo.env, "rev-list", repo.head, "--")
    if r.returncode != 0:
        raise RuntimeError(f"git rev-list failed in {repo.path}: {r.stderr.decode('utf-8', 'replace').strip()}")
    revs = r.stdout.decode("ascii").split()
    done = failed.partial
    if revs[: len(done.sha)] != done.sha:  # not the same walk (never seen): read everything again
        done = _Columns()
    mailmap_file = os.path.join(repo.path, ".mailmap") if repo.work_tree else ""
    with tempfile.TemporaryDirectory(prefix="skewless-git-") as tmp, tempfile.TemporaryFile() as todo:
        todo.write("".join(f"{sha}\n" for sha in revs[len(done.sha) :]).encode("ascii"))
        todo.seek(0)
        shadow = _shadow_repository(repo, tmp, missing)
        cmd = _log_cmd(shadow, repo.head, mailmap_file, revs_on_stdin=True)
        try:
            rest = _read_log(cmd, _git_env(shadow), report, stdin=todo, offset=len(done.sha))
        except _LogFailed as again:
            raise RuntimeError(f"reading the history of {repo.path} failed: {again.message}") from None
    done.extend(rest)
    return done


@dataclass(frozen=True)
class GitHistory:
    """What one read of a repository covered: the rows are exactly the commits reachable from ``ref``."""

    path: str
    name: str
    name_origin: str  # "given" (--name), "remote" (origin's GitHub/GitLab URL) or "directory" (its name)
    ref: str  # full ref name (refs/heads/main, refs/remotes/origin/main, HEAD) or a commit id
    head: str  # the commit id ``ref`` pointed to when read
    shallow: bool  # a shallow clone: commits older than its boundary are not part of what was read
    roots: tuple[str, ...]  # root commits of the history (no parent)


def read_git_history(
    path: str | os.PathLike[str],
    repo_name: str | None = None,
    ref: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, GitHistory]:
    """Commit-event rows of every commit reachable from ``ref`` of the repository at ``path``, and what was read.

    ``path`` is the top directory of a work tree, or a bare repository (a ``.git`` directory works too); an
    enclosing repository is never used. ``ref`` defaults to the default branch (:func:`_default_ref`).
    ``repo_name`` defaults to ``owner/name`` of the ``origin`` remote when that is a GitHub/GitLab URL, else to the
    directory name (without a ``.git`` suffix); :attr:`GitHistory.name_origin` says which. ``progress`` is called
    with the number of commits read so far every 1000 commits and once at the end with the total. The table has
    :data:`COMMITS_SCHEMA` and is sorted by ``(committed_at, sha)``, the order of ``commits.parquet`` (which sorts
    by committed_at, repo, sha). A date git cannot format (before 1970 in a hand-made object) is null.

    Objects missing from the store (snapshots without some large blobs) do not fail the read: those file versions
    count as changed files with 0 lines, like binary files (a ``UserWarning`` says how many were missing).

    Raises :class:`NotAGitRepository` when ``path`` does not exist, is not a git repository, has no commits or no
    such ref, and ``RuntimeError`` when ``git log`` itself fails.
    """
    repo = _resolve_repository(path, ref)
    origin = "given"
    if repo_name is None:
        repo_name, origin = _default_repo_name(repo)
    r = _git(repo.path, repo.env, "rev-parse", "--is-shallow-repository")
    shallow = r.returncode == 0 and r.stdout.strip() == b"true"
    if shallow:
        warnings.warn(
            f"{repo.path} is a shallow clone: its oldest commits are diffed against the empty tree", stacklevel=2
        )
    r = _git(repo.path, repo.env, "rev-list", "--max-parents=0", repo.head, "--")
    roots = tuple(sorted(r.stdout.decode("ascii").split())) if r.returncode == 0 else ()

    reported = 0

    def report(n: int) -> None:  # a rerun (see below) does not report the same counts twice
        nonlocal reported
        if progress is not None and n > reported:
            reported = n
            progress(n)

    try:
        cols = _read_log(_log_cmd(repo.path, repo.head, ""), repo.env, report)
    except _LogFailed as failed:
        cols = _read_log_with_missing_objects(repo, failed, report)
    n = len(cols.sha)
    report(n)

    table = pa.Table.from_arrays(
        [
            pa.array([repo_name] * n, type=pa.string()),
            pa.array(cols.sha, type=pa.string()),
            pa.array(cols.author_id, type=pa.string()),
            pc.multiply(pa.array(cols.authored_at, type=pa.int64()), 1_000_000).cast(_TS),
            pc.multiply(pa.array(cols.committed_at, type=pa.int64()), 1_000_000).cast(_TS),
            pa.array(cols.is_merge, type=pa.bool_()),
            pa.array(cols.files_changed, type=pa.int32()),
            pa.array(cols.lines_added, type=pa.int32()),
            pa.array(cols.lines_deleted, type=pa.int32()),
            pa.array(cols.languages, type=COMMITS_SCHEMA.field("languages").type),
        ],
        schema=COMMITS_SCHEMA,
    )
    order = pc.sort_indices(table, sort_keys=[("committed_at", "ascending"), ("sha", "ascending")])
    history = GitHistory(path=repo.path, name=repo_name, name_origin=origin, ref=repo.ref, head=repo.head,
                         shallow=shallow, roots=roots)
    return table.take(order), history


def read_git_repository(
    path: str | os.PathLike[str],
    repo_name: str | None = None,
    progress: Callable[[int], None] | None = None,
    ref: str | None = None,
) -> pa.Table:
    """The rows of :func:`read_git_history` alone."""
    return read_git_history(path, repo_name=repo_name, ref=ref, progress=progress)[0]
