"""Where the command talks, and how a failure reads there: one line."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..exceptions import first_line

__all__ = ["Abort", "Console", "failure_reason", "one_line", "report_failures"]


class Abort(RuntimeError):
    """A failure that concerns every file, not one: stops a folder run at once."""


class Console:
    """Where the command talks: results to stdout, notes, errors and progress to stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def result(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            tqdm.write(text, file=sys.stderr)  # tqdm.write: not through a running bar

    def error(self, text: str) -> None:
        tqdm.write(f"latent-ot: error: {text}", file=sys.stderr)

    def progress(self, iterable=None, **kwargs) -> tqdm:
        return tqdm(iterable, disable=self.quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)


# Failures the command expects (a file, a model, the data, a value): their message is enough.
_EXPECTED = (OSError, ValueError, TypeError, ImportError, Abort)


def one_line(error: BaseException | str) -> str:
    """The first line of an error, as the command reports it.

    A failure the command does not expect is named, with a hint to see where it came from.

    Examples
    --------
    >>> one_line(FileNotFoundError("op.safetensors not found\\nmore detail"))
    'op.safetensors not found'
    >>> one_line(KeyError("weights"))
    "KeyError: 'weights' (run with --debug for the traceback)"
    >>> one_line("ValueError: not an image\\n  at line 3")
    'ValueError: not an image'
    """
    message = first_line(error)
    if isinstance(error, str) or (isinstance(error, _EXPECTED) and message):
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


def failure_reason(error: BaseException) -> str:
    """Why a file could not be processed, as a folder run's report gives it.

    Examples
    --------
    >>> failure_reason(ValueError("not an image"))
    'ValueError: not an image'
    """
    return f"{type(error).__name__}: {error}"


def report_failures(console: Console, failed: list[tuple[Path, str]]) -> None:
    """One error line per file that could not be processed: its path and the reason."""
    for path, reason in failed:
        console.error(f"{path}: {one_line(reason)}")
