"""User-facing errors: one paragraph that says what is wrong and what to do, never a deep traceback."""

from __future__ import annotations

import difflib
import functools
import os
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2


class FtlabError(Exception):
    """An error the user can fix; its message is the whole report."""


def did_you_mean(word: str, options: Iterable[str], n: int = 5) -> str:
    """Return ' Did you mean: a, b?' for the closest options, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(options), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def debug_enabled() -> bool:
    """Full tracebacks are wanted (HYDRA_FULL_ERROR=1 or FTLAB_DEBUG=1)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("FTLAB_DEBUG") == "1"


def verbose_enabled() -> bool:
    """Show every library message, also the known-harmless ones (FTLAB_VERBOSE=1, or debugging as above)."""
    return os.environ.get("FTLAB_VERBOSE") == "1" or debug_enabled()


def report_errors(fn: F) -> F:
    """Turn an FtlabError raised by `fn` into a short message on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FtlabError as err:
            if debug_enabled():
                raise
            text = "\n".join(textwrap.fill(p, 100) for p in str(err).split("\n"))
            print(f"\nftlab: error: {text}\n(HYDRA_FULL_ERROR=1 shows the traceback.)", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
