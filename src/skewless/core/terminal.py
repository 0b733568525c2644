"""What a user of the ``skewless`` command sees: colour only on a terminal, library noise only with ``--verbose``.

:func:`configure` (called once by the CLI's global callback) sets it up for the process:

- a stream that is not a terminal (a pipe, a file, CI) gets no ANSI escape codes: Feast writes colours into its
  messages unconditionally, so such streams are wrapped in :class:`PlainText`, which drops the codes;
- without ``--verbose``: log records below WARNING are dropped (MLflow's own handler too, through
  ``MLFLOW_LOGGING_LEVEL``) and warnings raised in third-party code are not shown (skewless's own still are;
  ``python -W``/``PYTHONWARNINGS`` win). Libraries add their own filters at import time (one of the serving stack
  puts "once" for every DeprecationWarning first), so the filters are backed by :func:`warnings.showwarning`,
  which only shows warnings attributed to the project's own files;
- :func:`library_output` swallows what a library prints on stdout/stderr while it works (Feast's "Materializing
  ..." lines, MLflow's "Successfully registered model ..."), unless ``--verbose``; if the block fails, what was
  swallowed is written to stderr so the failure keeps its context;
- :func:`progress` is a tqdm bar on a terminal and nothing otherwise (the caller prints a plain line when done).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, TextIO

#: CSI sequences (colours, cursor moves) and the two-character escapes.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: Modules whose warnings always show (everything else is library noise without --verbose).
OWN_MODULES = r"(skewless|serving|training|monitoring|dags)(\.|$)"

#: Top-level folders of the project whose warnings are shown without --verbose.
OWN_DIRS = ("src", "serving", "training", "monitoring", "dags")

_verbose = False


def verbose() -> bool:
    """Whether ``--verbose`` was given (library output shown)."""
    return _verbose


class PlainText:
    """A text stream that writes through to ``stream`` without ANSI escape codes."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(ANSI.sub("", text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure(verbose: bool = False) -> None:
    """Set up logging, warnings and the standard streams of this process (see the module docstring)."""
    global _verbose
    _verbose = verbose
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PlainText) and not is_terminal(stream):
            setattr(sys, name, PlainText(stream))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is imported (its own handler)
    if not sys.warnoptions:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=OWN_MODULES)
        if not getattr(warnings.showwarning, "own_only", False):
            warnings.showwarning = _own_warnings_only(warnings.showwarning)


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` is project code (``src/``, ``serving/``, ``training/``, ``monitoring/``, ``dags/``)."""
    from skewless.core.config import PROJECT_ROOT

    try:
        parts = Path(filename).resolve().relative_to(PROJECT_ROOT.resolve()).parts
    except (ValueError, OSError):
        return False
    return bool(parts) and parts[0] in OWN_DIRS


def _own_warnings_only(show):
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if is_own_file(filename):
            show(message, category, filename, lineno, file, line)

    showwarning.own_only = True
    return showwarning


@contextlib.contextmanager
def library_output(stderr: bool = False) -> Iterator[None]:
    """Swallow what libraries print on stdout (and stderr if asked) in the block, unless ``--verbose``.

    On an exception the swallowed text goes to stderr before the exception propagates.
    """
    if _verbose:
        yield
        return
    buffer = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(buffer))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(buffer))
        try:
            yield
        except BaseException:
            stack.close()
            sys.stderr.write(ANSI.sub("", buffer.getvalue()))
            raise


def progress(total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr when stderr is a terminal; a disabled one (prints nothing) otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not is_terminal(sys.stderr),
                dynamic_ncols=True)
