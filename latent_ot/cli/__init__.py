"""The ``latent-ot`` command: fit an operator, transform folders, sweep alpha, evaluate, demo.

::

    latent-ot demo                                      # the method, start to end, offline
    latent-ot fit --restored restored/ -o operator.safetensors
    latent-ot transform operator.safetensors restored/ -o realistic/ --alpha 0.5
    latent-ot sweep operator.safetensors val/restored/ --reference val/clean/ -o sweep/
    latent-ot evaluate --restored realistic/ --reference clean/
    latent-ot prior photos/ -o photos.safetensors       # natural statistics for fit --prior

Every command that does not read its autoencoder from an operator file uses ``--vae taef2``
by default: TAEF2, bundled with latent-ot, runs offline and several times faster than the
SD VAE on CPU. ``--vae sd-vae-ft-mse`` is the paper's autoencoder, downloaded from the Hugging
Face hub on first use. An autoencoder that cannot be loaded is an error; none is replaced by
another.

Results (tables, paths) go to stdout; progress bars, notes and errors go to stderr. Exit
status: 0 when everything worked, 1 when something failed (some files, a model, the data), 2
for a usage error. An error is one line; ``--debug`` raises it with its traceback instead.
Operators are written in the safe format of :mod:`latent_ot.serialization` (``.safetensors``):
loading one never runs code.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["build_parser", "main", "parse_alphas", "resolve_vae"]

_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``latent-ot`` command with ``argv`` (default: ``sys.argv[1:]``).

    Ctrl-C at any point, the import of torch included, prints one line and returns 130
    (with ``--debug``: raises ``KeyboardInterrupt``). Warnings that other packages raise
    (deprecations in huggingface_hub or diffusers, say), and their log messages below
    errors (the hub's retries), are not shown: they concern their code, not the command's
    use. Only the command filters them, while it runs; the library leaves warning filters
    and logging to its caller.

    Returns
    -------
    int
        The exit status: 0 on success, 1 when something failed, 2 for a usage error, 130
        when interrupted.

    Examples
    --------
    >>> main(["transform", "missing.safetensors", "photos/", "-o", "out/"])
    1
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings(), _third_party_logs_quiet():
            _only_our_warnings()
            return _run(argv)
    except KeyboardInterrupt:
        if "--debug" in argv:
            raise
        print("latent-ot: interrupted", file=sys.stderr, flush=True)
        return _INTERRUPTED


def _only_our_warnings() -> None:
    warnings.simplefilter("ignore")
    # A warning is attributed to the module its stack level names: latent-ot's own warnings
    # name latent-ot or the caller (here, the command), both latent_ot modules.
    warnings.filterwarnings("default", module=r"latent_ot(\.|$)")


# Packages that log warnings of their own (retries, deprecations) on the command's stderr.
_CHATTY_LOGGERS = ("huggingface_hub", "diffusers", "httpx")


@contextlib.contextmanager
def _third_party_logs_quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run(argv: list[str]) -> int:
    # Imported here, inside main's guard: importing torch takes seconds, and Ctrl-C then
    # must print one line, not a traceback from torch's import.
    from ._console import Console, one_line
    from ._options import attach_dash_values
    from ._parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(attach_dash_values(argv, ("--alphas",)))
    except SystemExit as exit_:  # --help, --version or a usage error: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    console = Console(quiet=args.quiet)
    try:
        return args.run(args, console)
    except Exception as err:
        if args.debug:
            raise
        console.error(one_line(err))
        return 1


def __getattr__(name: str) -> Any:
    # The names of __all__ besides main, imported on first use (main must stay light).
    if name == "build_parser":
        from ._parser import build_parser

        return build_parser
    if name == "parse_alphas":
        from ._options import parse_alphas

        return parse_alphas
    if name == "resolve_vae":
        from ._models import resolve_vae

        return resolve_vae
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
