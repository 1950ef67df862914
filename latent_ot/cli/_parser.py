"""The argument parser of the ``latent-ot`` command: its help, and one subparser per command."""

from __future__ import annotations

import argparse

from .. import __version__
from . import _demo, _evaluate, _fit, _prior, _sweep, _transform
from ._models import VAE_NOTE
from ._options import OPERATOR_SUFFIX, HelpFormatter, add_output_options, wrap

__all__ = ["build_parser"]

_DESCRIPTION = """\
Deep Optimal Transport (Adrai et al., NeurIPS 2023): make the outputs of any image
restoration method look like natural photos. An operator is fitted once on restored images
(a dozen is enough) and natural image statistics (built in, or from your own photos); it then
moves new restored images towards natural image statistics, in the latent space of a
pretrained autoencoder. Alpha trades realism (0) for fidelity to the restored input (1)."""

_EPILOG = f"""\
start here:
  latent-ot demo                 runs the whole method on sample photos, offline

typical use:
  latent-ot fit --restored restored/ -o operator{OPERATOR_SUFFIX}
  latent-ot transform operator{OPERATOR_SUFFIX} new_restored/ -o realistic/ --alpha 0.3
  latent-ot sweep operator{OPERATOR_SUFFIX} val/restored/ --reference val/clean/ -o sweep/

{{vae_note}}

Run "latent-ot COMMAND --help" for the options of a command."""

# In the order of the help: the demo first, then the workflow.
_COMMANDS = (_demo, _fit, _transform, _sweep, _evaluate, _prior)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``latent-ot`` command and its subcommands.

    Examples
    --------
    >>> args = build_parser().parse_args(["fit", "--restored", "out/", "-o", "op.safetensors"])
    >>> args.vae, args.natural, args.prior, args.patch_size
    ('taef2', None, None, 'auto')
    """
    parser = argparse.ArgumentParser(
        prog="latent-ot",
        description=wrap(_DESCRIPTION),
        epilog=_EPILOG.format(vae_note=wrap(VAE_NOTE)),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_output_options(parser, default=False)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True
    for module in _COMMANDS:
        module.add_parser(commands)
    return parser
