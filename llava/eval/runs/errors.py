"""How a generation run stops: a refusal before any work (exit code 2) or a run that produced
no answers (exit code 1), each reported as one line ``error: ...`` instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class RunError(Exception):
    """Bad flags or inputs, or a run that must not go on (another model's answers, a locked
    file, ...), found before any answer is written. Exit code 2."""

    exit_code = 2


class RunFailed(RunError):
    """The run went through but produced nothing usable (every question failed, or the model
    failed on several questions in a row). Exit code 1."""

    exit_code = 1


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn :class:`RunError` into ``error: <message>`` on stderr and ``SystemExit(code)``."""
    try:
        yield
    except RunError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.exit_code) from None


__all__ = ["RunError", "RunFailed", "exit_on_error"]
