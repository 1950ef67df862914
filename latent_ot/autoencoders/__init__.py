"""Pretrained image autoencoders behind one small interface.

The transport is computed on latents, so every autoencoder is wrapped in an :class:`Autoencoder`
with the same contract: :meth:`~Autoencoder.encode` takes RGB images in ``[0, 1]`` and returns
deterministic float32 latents, :meth:`~Autoencoder.decode` takes latents and returns RGB images
clamped to ``[0, 1]``. Each adapter hides its model's own range convention.

Images whose pass would take more memory than the budget (by default most of the memory free
on the device, :data:`latent_ot.memory.AUTO_BUDGET_FRACTIONS`) are encoded and decoded in
overlapping tiles, one at a time, so that the memory stays that of one tile; smaller ones run
in one pass (:meth:`~Autoencoder.set_tiling`, :func:`latent_ot.memory.auto_memory_budget`,
:data:`AUTO_TILE_SIZES`). Convolutions run channels-last on the CPU, where it is faster
(:meth:`~Autoencoder.set_memory_format`, :data:`AUTO_MEMORY_FORMATS`). Outputs are never NaN
or infinite: a half-precision model that
overflows is run again in float32.

Adapters:

- :class:`DiffusersKLAutoencoder` wraps a ``diffusers.AutoencoderKL`` (Stable Diffusion VAEs).
- :class:`DiffusersTinyAutoencoder` wraps a ``diffusers.AutoencoderTiny`` (TAESD on the hub).
- :class:`TAESDAutoencoder` is a small implementation of the TAESD family that loads its
  ``<name>_encoder.pth`` / ``<name>_decoder.pth`` state dicts, including members that diffusers
  cannot load (``taef2``).
- :class:`PixelAutoencoder` is the identity, for transport in pixel space and for tests.

:func:`load_autoencoder` turns a preset name (see :data:`PRESETS`), a hub id, a local directory
or a model instance into one of these. Local copies are searched first in the directory given by
``models_dir`` or by the environment variable :data:`MODELS_DIR_ENV`. The default, ``"taef2"``,
ships with the package (:data:`BUNDLED_WEIGHTS`) and loads offline; ``"sd-vae-ft-mse"``, the
paper's autoencoder, is downloaded from the Hugging Face hub on first use.

diffusers is imported lazily: it takes seconds to import and the pixel and TAESD paths do not
need it.
"""

from ._base import Autoencoder
from ._layout import AUTO_MEMORY_FORMATS
from ._loading import load_autoencoder
from ._tiling import AUTO_TILE_SIZES, TileCallback, reporting_tiles
from .diffusers import DiffusersKLAutoencoder, DiffusersTinyAutoencoder
from .pixel import PixelAutoencoder
from .presets import BUNDLED_WEIGHTS, MODELS_DIR_ENV, PRESETS, AutoencoderPreset
from .taesd import TAESDAutoencoder

__all__ = [
    "AUTO_MEMORY_FORMATS",
    "AUTO_TILE_SIZES",
    "BUNDLED_WEIGHTS",
    "MODELS_DIR_ENV",
    "PRESETS",
    "Autoencoder",
    "AutoencoderPreset",
    "DiffusersKLAutoencoder",
    "DiffusersTinyAutoencoder",
    "PixelAutoencoder",
    "TAESDAutoencoder",
    "TileCallback",
    "load_autoencoder",
    "reporting_tiles",
]
