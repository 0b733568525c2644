"""One error type for everything skewless refuses or cannot do: :class:`SkewlessError`.

Every error raised for a user's mistake (bad input, a missing table, a wrong option) or an unavailable resource (a
server down, a registry unreachable) derives from it, so the CLI has ONE handler (:func:`skewless.cli.run`): the
message on one line, exit code :attr:`SkewlessError.exit_code`, no traceback. Anything else is a bug and keeps
its traceback. The subclasses also keep their historical builtin base (``ValueError`` / ``RuntimeError``), so
callers that catch those are unaffected.
"""

from __future__ import annotations


class SkewlessError(Exception):
    """Base of every expected skewless error; the message names the problem and, where there is one, the fix."""

    #: Exit code of the CLI for this error.
    exit_code: int = 1
