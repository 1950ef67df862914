"""The autoencoder a command uses, and the operators it fits or loads.

The default autoencoder is TAEF2, bundled with latent-ot: it runs offline, and several times
faster than the SD VAE on CPU. Nothing is chosen by what happens to be installed or online,
and nothing falls back from one autoencoder to another: an autoencoder that cannot be loaded
is an error, which names the places it was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..autoencoders import MODELS_DIR_ENV, PRESETS, load_autoencoder
from ..devices import resolve_device
from ..estimators import LatentOTTransformer
from ._console import Console

__all__ = [
    "DEFAULT_VAE",
    "PAPER_VAE",
    "VAE_CHOICE",
    "VAE_NOTE",
    "load_operator",
    "new_operator",
    "resolve_vae",
]

#: The autoencoder of every command that does not read it from an operator file.
DEFAULT_VAE = "taef2"
#: The autoencoder of the paper (Adrai et al. 2023), from the Hugging Face hub.
PAPER_VAE = "sd-vae-ft-mse"

VAE_CHOICE = (
    f"a preset, hub id, model directory or 'pixel'; {DEFAULT_VAE} is bundled (offline, fast "
    f"on CPU), {PAPER_VAE} is the paper's (downloaded on first use)"
)

VAE_NOTE = (
    f"autoencoders (--vae): the default, {DEFAULT_VAE}, is bundled with latent-ot: it runs "
    f"offline, several times faster than the SD VAE on CPU. {PAPER_VAE} is the paper's "
    f"autoencoder, downloaded from the Hugging Face hub on first use. Others: a preset "
    f"({', '.join(PRESETS)}), a hub id owner/name, a local model directory, or 'pixel' "
    f"(transport in pixel space). Presets and hub ids are looked up first in "
    f"${MODELS_DIR_ENV}/<name>/. An autoencoder that cannot be loaded is an error: none is "
    f"replaced by another."
)


def resolve_vae(spec: str, console: Console | None = None) -> str:
    """The autoencoder a command uses for ``--vae spec``; says which on ``console``.

    ``spec`` is returned as it is, except ``"auto"`` (the option's value in earlier versions),
    which is the default, ``"taef2"``. Whether it can be loaded is found out when it
    is loaded: an autoencoder that cannot be is an error, never replaced by another.

    Examples
    --------
    >>> resolve_vae("sd-vae-ft-mse")
    'sd-vae-ft-mse'
    >>> resolve_vae("auto")
    'taef2'
    """
    vae = DEFAULT_VAE if spec == "auto" else spec
    if console is not None:
        console.note(f"autoencoder: {vae} ({_origin(vae)})")
    return vae


def _origin(vae: str) -> str:
    """Where ``vae`` is loaded from, in a few words."""
    if vae == "pixel":
        return "none: the transport runs in pixel space"
    if Path(vae).expanduser().is_dir():
        return "local directory"
    root = os.environ.get(MODELS_DIR_ENV)
    if root and (Path(root).expanduser() / vae.rsplit("/", 1)[-1]).is_dir():
        return f"local copy in ${MODELS_DIR_ENV}"
    preset = PRESETS.get(vae)
    if preset is not None and preset.bundled:
        default = "the default, " if vae == DEFAULT_VAE else ""
        return f"{default}bundled with latent-ot; --vae {PAPER_VAE} for the paper's"
    hub_id = preset.hub_id if preset is not None else vae
    return f"{hub_id} from the Hugging Face hub, downloaded on first use"


def autoencoder_of(vae, args):
    """``vae`` as the operator's parameter: the name itself, or with ``--dtype`` other than
    ``auto`` the autoencoder loaded in that dtype (the setting travels with it)."""
    if args.dtype == "auto":
        return vae
    return load_autoencoder(vae, device=resolve_device(args.device), dtype=args.dtype)


def new_operator(args, vae: str, **params) -> LatentOTTransformer:
    """An operator with the autoencoder, patch, device and seed options of ``args``."""
    return LatentOTTransformer(
        vae=autoencoder_of(vae, args),
        patch_size=args.patch_size,
        device=args.device,
        batch_size=args.batch_size,
        random_state=args.seed,
        verbose=not args.quiet,
        **params,
    )


def load_operator(args, *, verbose: bool) -> LatentOTTransformer:
    """The operator file of ``args``, with the device options of the command line."""
    if not args.operator.is_file():
        raise FileNotFoundError(
            f"operator file {args.operator} not found; create one with 'latent-ot fit'"
        )
    operator = LatentOTTransformer.load(
        args.operator,
        sha256=getattr(args, "sha256", None),
        check_autoencoder=not getattr(args, "allow_other_autoencoder", False),
    )
    overrides = {"device": args.device, "batch_size": args.batch_size, "verbose": verbose}
    if args.vae is not None or args.dtype != "auto":
        overrides["vae"] = autoencoder_of(args.vae or operator.vae, args)
    if args.seed is not None:
        overrides["random_state"] = args.seed
    return operator.set_params(**overrides)
