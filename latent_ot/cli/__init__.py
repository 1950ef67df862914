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

import sys
from collections.abc import Sequence

from ._console import Console, one_line
from ._models import resolve_vae
from ._options import attach_dash_values, parse_alphas
from ._parser import build_parser

__all__ = ["build_parser", "main", "parse_alphas", "resolve_vae"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``latent-ot`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when something failed, 2 for a usage error.

    Examples
    --------
    >>> main(["transform", "missing.safetensors", "photos/", "-o", "out/"])
    1
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(attach_dash_values(argv, ("--alphas",)))
    except SystemExit as exit_:  # --help, --version or a usage error: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    console = Console(quiet=args.quiet)
    try:
        return args.run(args, console)
    except KeyboardInterrupt:
        if args.debug:
            raise
        console.error("interrupted")
        return 130
    except Exception as err:
        if args.debug:
            raise
        console.error(one_line(err))
        return 1
