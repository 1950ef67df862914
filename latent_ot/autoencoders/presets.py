"""The named autoencoders that :func:`~latent_ot.autoencoders.load_autoencoder` knows, and
where their weights are looked for: a local models directory, the package itself, the hub.

Examples
--------
>>> [name for name, preset in PRESETS.items() if preset.bundled]
['taef2']
>>> sorted(path.name for path in (BUNDLED_WEIGHTS / "taef2").iterdir())
['LICENSE', 'README.md', 'taef2_decoder.pth', 'taef2_encoder.pth']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

MODELS_DIR_ENV = "LATENT_OT_MODELS_DIR"
"""Environment variable naming a directory of local model copies, searched before the hub.

A preset or hub id ``owner/name`` is looked up as ``$LATENT_OT_MODELS_DIR/<preset or name>/``,
which may hold a diffusers model (``config.json`` and weights) or a TAESD-family pair
``<name>_encoder.pth`` + ``<name>_decoder.pth``.
"""

BUNDLED_WEIGHTS: Path = Path(__file__).resolve().parent / "weights"
"""Directory of the pretrained weights shipped inside the package, one folder per preset.

It holds ``taef2/`` (``taef2_encoder.pth``, ``taef2_decoder.pth``, their MIT ``LICENSE`` and a
README with their origin and checksums): the weights of the ``"taef2"`` preset, which therefore
loads offline with no download and no configuration. A ``taef2/`` folder in the models directory
(``models_dir=`` or :data:`MODELS_DIR_ENV`) takes precedence over it.
"""


@dataclass(frozen=True)
class AutoencoderPreset:
    """A named autoencoder that :func:`load_autoencoder` knows how to find.

    Attributes
    ----------
    hub_id : str or None
        Hugging Face hub id loaded with diffusers, or None when only a local copy can be used.
    latent_channels : int
        Channels of the latent.
    factor : int
        Spatial downsampling factor.
    description : str
        One line for the documentation.
    bundled : bool, default False
        Whether the weights ship with the package, in ``BUNDLED_WEIGHTS / <preset name>``
        (:data:`BUNDLED_WEIGHTS`): such a preset loads offline.

    Examples
    --------
    >>> PRESETS["taef2"].bundled, PRESETS["sd-vae-ft-mse"].hub_id
    (True, 'stabilityai/sd-vae-ft-mse')
    """

    hub_id: str | None
    latent_channels: int
    factor: int
    description: str
    bundled: bool = False


PRESETS: Mapping[str, AutoencoderPreset] = MappingProxyType(
    {
        "sd-vae-ft-mse": AutoencoderPreset(
            "stabilityai/sd-vae-ft-mse",
            4,
            8,
            "Stable Diffusion 1 KL VAE, decoder fine-tuned with MSE: the paper's autoencoder. "
            "Downloaded from the Hugging Face hub on first use.",
        ),
        "sd-vae-ft-ema": AutoencoderPreset(
            "stabilityai/sd-vae-ft-ema", 4, 8, "Stable Diffusion 1 KL VAE, EMA fine-tune."
        ),
        "taesd": AutoencoderPreset(
            "madebyollin/taesd", 4, 8, "Tiny autoencoder for the Stable Diffusion 1/2 latent space."
        ),
        "taesdxl": AutoencoderPreset(
            "madebyollin/taesdxl", 4, 8, "Tiny autoencoder for the SDXL latent space."
        ),
        "taesd3": AutoencoderPreset(
            "madebyollin/taesd3", 16, 8, "Tiny autoencoder for the SD3 latent space."
        ),
        "taef1": AutoencoderPreset(
            "madebyollin/taef1", 16, 8, "Tiny autoencoder for the FLUX.1 latent space."
        ),
        "taef2": AutoencoderPreset(
            None,
            32,
            8,
            "Tiny autoencoder for the FLUX.2 latent space, the default: bundled with the "
            "package (works offline), several times faster than the Stable Diffusion VAE on CPU.",
            bundled=True,
        ),
    }
)
"""Preset names accepted by :func:`load_autoencoder`, with where each one comes from."""
