"""Pretrained image autoencoders behind one small interface.

The transport is computed on latents, so every autoencoder is wrapped in an :class:`Autoencoder`
with the same contract: :meth:`~Autoencoder.encode` takes RGB images in ``[0, 1]`` and returns
deterministic float32 latents, :meth:`~Autoencoder.decode` takes latents and returns RGB images
clamped to ``[0, 1]``. Each adapter hides its model's own range convention.

Adapters:

- :class:`DiffusersKLAutoencoder` wraps a ``diffusers.AutoencoderKL`` (Stable Diffusion VAEs).
- :class:`DiffusersTinyAutoencoder` wraps a ``diffusers.AutoencoderTiny`` (TAESD on the hub).
- :class:`TAESDAutoencoder` is a small implementation of the TAESD family that loads its
  ``<name>_encoder.pth`` / ``<name>_decoder.pth`` state dicts, including members that diffusers
  cannot load (``taef2``).
- :class:`PixelAutoencoder` is the identity, for transport in pixel space and for tests.

:func:`load_autoencoder` turns a preset name (see :data:`PRESETS`), a hub id, a local directory
or a model instance into one of these. Local copies are searched first in the directory given by
``models_dir`` or by the environment variable :data:`MODELS_DIR_ENV`.

diffusers is imported lazily: it takes seconds to import and the pixel and TAESD paths do not
need it.
"""

from __future__ import annotations

import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from .exceptions import AutoencoderNotFoundError

__all__ = [
    "MODELS_DIR_ENV",
    "PRESETS",
    "Autoencoder",
    "AutoencoderPreset",
    "DiffusersKLAutoencoder",
    "DiffusersTinyAutoencoder",
    "PixelAutoencoder",
    "TAESDAutoencoder",
    "load_autoencoder",
]

MODELS_DIR_ENV = "LATENT_OT_MODELS_DIR"
"""Environment variable naming a directory of local model copies, searched before the hub.

A preset or hub id ``owner/name`` is looked up as ``$LATENT_OT_MODELS_DIR/<preset or name>/``,
which may hold a diffusers model (``config.json`` and weights) or a TAESD-family pair
``<name>_encoder.pth`` + ``<name>_decoder.pth``.
"""

_TAESD_HOME = "https://github.com/madebyollin/taesd"


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
    """

    hub_id: str | None
    latent_channels: int
    factor: int
    description: str


PRESETS: Mapping[str, AutoencoderPreset] = MappingProxyType(
    {
        "sd-vae-ft-mse": AutoencoderPreset(
            "stabilityai/sd-vae-ft-mse",
            4,
            8,
            "Stable Diffusion 1 KL VAE, decoder fine-tuned with MSE (the paper's autoencoder).",
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
            "Tiny autoencoder for the FLUX.2 latent space; local taef2_encoder.pth and "
            "taef2_decoder.pth only (diffusers cannot load it).",
        ),
    }
)
"""Preset names accepted by :func:`load_autoencoder`, with where each one comes from."""


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point torch.dtype, got {dtype!r}")
    return dtype


def _as_output(tensor: Tensor) -> Tensor:
    # Called outside inference mode: the copy is an ordinary tensor that callers may modify in
    # place, which inference tensors forbid.
    return tensor.float() if tensor.dtype != torch.float32 else tensor.clone()


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class Autoencoder(ABC):
    """An image autoencoder with a fixed contract on ranges, shapes and dtypes.

    Subclasses implement ``_encode`` and ``_decode`` on tensors already on the model's device
    and dtype, and ``_move`` when they hold modules; this class does the checks, the casts and
    the inference mode.

    Attributes
    ----------
    factor : int
        Spatial downsampling factor: an ``H x W`` image has an ``H/factor x W/factor`` latent.
    latent_channels : int
        Channels of the latent.
    name : str
        Human-readable name, used in error messages.
    device : torch.device
        Where the model runs and where outputs are returned.
    dtype : torch.dtype
        The model's compute dtype; inputs are cast to it, outputs are float32.
    sample_latent : bool
        Whether :meth:`encode` samples the latent distribution instead of taking its mean.

    Examples
    --------
    >>> import torch
    >>> ae = PixelAutoencoder()
    >>> images = torch.rand(2, 3, 8, 8)
    >>> latents = ae.encode(images)
    >>> latents.shape, latents.dtype
    (torch.Size([2, 3, 8, 8]), torch.float32)
    >>> torch.equal(ae.decode(latents), images)
    True
    """

    factor: int
    latent_channels: int
    name: str
    device: torch.device
    dtype: torch.dtype
    sample_latent: bool = False

    def __init__(
        self,
        *,
        factor: int,
        latent_channels: int,
        name: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.factor = int(factor)
        self.latent_channels = int(latent_channels)
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Encode RGB images in ``[0, 1]`` to latents.

        Parameters
        ----------
        images : Tensor
            Float tensor ``N x 3 x H x W`` in ``[0, 1]``, on any device; ``H`` and ``W`` must be
            multiples of :attr:`factor` (pad the images first, nothing is cropped here).
        generator : torch.Generator, optional
            Random generator for the latent sample; used only when :attr:`sample_latent` is
            True, where the same seed gives the same latents.

        Returns
        -------
        Tensor
            Float32 latents ``N x latent_channels x H/factor x W/factor`` on :attr:`device`.
        """
        _check_images(images, self.factor)
        with torch.inference_mode():
            latents = self._encode(images.to(device=self.device, dtype=self.dtype), generator)
        return _as_output(latents)

    def decode(self, latents: Tensor) -> Tensor:
        """Decode latents to RGB images clamped to ``[0, 1]``.

        Parameters
        ----------
        latents : Tensor
            Float tensor ``N x latent_channels x h x w``, on any device.

        Returns
        -------
        Tensor
            Float32 images ``N x 3 x h*factor x w*factor`` in ``[0, 1]`` on :attr:`device`.
        """
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape N x {self.latent_channels} x h x w for {self.name}, "
                f"got {tuple(latents.shape)}"
            )
        with torch.inference_mode():
            images = self._decode(latents.to(device=self.device, dtype=self.dtype))
        # Outside inference mode, so the clamped copy is an ordinary tensor (see _as_output).
        return images.float().clamp(0, 1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> Autoencoder:
        """Move the model to ``device`` and/or cast it to ``dtype`` (None keeps the current one).

        Returns
        -------
        Autoencoder
            ``self``, moved in place.
        """
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else _as_dtype(dtype)
        self._move(device, dtype)
        self.device, self.dtype = device, dtype
        return self

    @abstractmethod
    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Images in [0, 1] on the model's device and dtype -> latents."""

    @abstractmethod
    def _decode(self, latents: Tensor) -> Tensor:
        """Latents on the model's device and dtype -> images, roughly in [0, 1]."""

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:  # noqa: B027
        """Move the underlying modules; nothing to do for a model without weights."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, factor={self.factor}, "
            f"latent_channels={self.latent_channels}, device={self.device}, dtype={self.dtype})"
        )


def _check_images(images: Any, factor: int) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape N x 3 x H x W, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(
            f"images height and width must be multiples of the autoencoder's factor {factor}, "
            f"got {height} x {width}; pad the images first (e.g. reflect padding)"
        )


# --------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------


class PixelAutoencoder(Autoencoder):
    """The identity autoencoder: latents are the pixels (factor 1, 3 channels).

    Use it to run the transport in pixel space. :meth:`decode` clamps to ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> ae = PixelAutoencoder()
    >>> ae.factor, ae.latent_channels
    (1, 3)
    >>> ae.decode(torch.full((1, 3, 2, 2), 1.5)).max().item()
    1.0
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(factor=1, latent_channels=3, name="pixel", device=device, dtype=dtype)

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return images

    def _decode(self, latents: Tensor) -> Tensor:
        return latents


class _DiffusersAutoencoder(Autoencoder):
    """Shared plumbing of the diffusers adapters: the module lives in ``self.model``."""

    def __init__(self, model: Any, *, factor: int, name: str | None) -> None:
        if name is None:
            source = getattr(model.config, "_name_or_path", None)
            name = f"{type(model).__name__} ({source})" if source else type(model).__name__
        self.model = model.eval()
        super().__init__(
            factor=factor,
            latent_channels=model.config.latent_channels,
            name=name,
            device=model.device,
            dtype=model.dtype,
        )

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model.to(device=device, dtype=dtype)


class DiffusersKLAutoencoder(_DiffusersAutoencoder):
    """Adapter for a ``diffusers.AutoencoderKL`` (the Stable Diffusion VAEs).

    The model works in ``[-1, 1]``; the conversion from and to ``[0, 1]`` happens here.
    Latents are the raw encoder output, *not* multiplied by ``config.scaling_factor``: the
    transport map is affine, so a global scale changes nothing in its result, and raw latents
    are what the decoder expects back.

    Parameters
    ----------
    model : diffusers.AutoencoderKL
        The model; it is put in eval mode and moved by :meth:`to` in place.
    sample_latent : bool, default False
        If False, :meth:`encode` returns the mean of the latent distribution (deterministic).
        If True, it draws a sample with the ``generator`` given to :meth:`encode`.
    name : str, optional
        Name for messages; defaults to the class name and the path it was loaded from.

    Examples
    --------
    >>> import torch
    >>> from diffusers import AutoencoderKL
    >>> model = AutoencoderKL(
    ...     block_out_channels=(8, 16),
    ...     down_block_types=("DownEncoderBlock2D",) * 2,
    ...     up_block_types=("UpDecoderBlock2D",) * 2,
    ...     norm_num_groups=8,
    ...     latent_channels=4,
    ... )
    >>> ae = DiffusersKLAutoencoder(model)
    >>> ae.factor, ae.latent_channels
    (2, 4)
    >>> ae.encode(torch.rand(1, 3, 16, 16)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, model: Any, sample_latent: bool = False, *, name: str | None = None):
        # Every encoder block but the last halves the resolution.
        factor = 2 ** (len(model.config.block_out_channels) - 1)
        super().__init__(model, factor=factor, name=name)
        self.sample_latent = bool(sample_latent)

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        distribution = self.model.encode(images * 2 - 1).latent_dist
        if self.sample_latent:
            return distribution.sample(generator=generator)
        return distribution.mean

    def _decode(self, latents: Tensor) -> Tensor:
        return (self.model.decode(latents).sample + 1) / 2


class DiffusersTinyAutoencoder(_DiffusersAutoencoder):
    """Adapter for a ``diffusers.AutoencoderTiny`` (TAESD models on the hub).

    diffusers' ``AutoencoderTiny`` takes and returns images in ``[-1, 1]`` (its encoder maps
    them back to TAESD's ``[0, 1]`` internally, its decoder maps its output to ``[-1, 1]``);
    the conversion from and to ``[0, 1]`` happens here. Latents are raw (no ``scale_latents``).
    The encoder is deterministic.

    Parameters
    ----------
    model : diffusers.AutoencoderTiny
        The model; it is put in eval mode and moved by :meth:`to` in place.
    name : str, optional
        Name for messages; defaults to the class name and the path it was loaded from.

    Examples
    --------
    >>> import torch
    >>> from diffusers import AutoencoderTiny
    >>> model = AutoencoderTiny(
    ...     encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)
    ... )
    >>> ae = DiffusersTinyAutoencoder(model)
    >>> ae.factor, ae.latent_channels
    (8, 4)
    >>> ae.decode(ae.encode(torch.rand(1, 3, 16, 16))).shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(self, model: Any, *, name: str | None = None):
        # Every encoder stage but the first starts with a stride-2 conv.
        factor = 2 ** (len(model.config.encoder_block_out_channels) - 1)
        super().__init__(model, factor=factor, name=name)

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.model.encode(images * 2 - 1).latents

    def _decode(self, latents: Tensor) -> Tensor:
        return (self.model.decode(latents).sample + 1) / 2


# --------------------------------------------------------------------------------------------
# TAESD family from its .pth state dicts
# --------------------------------------------------------------------------------------------


def _conv(n_in: int, n_out: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """TAESD residual block, with the optional GroupNorm "pooling" branch of newer members."""

    def __init__(self, n_in: int, n_out: int, pool_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pool_channels:
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, pool_channels, 1, bias=False),
                nn.GroupNorm(4, pool_channels),
                nn.ReLU(),
                nn.Conv2d(pool_channels, n_in, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _taesd_encoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    def stage() -> list[nn.Module]:
        return [
            _conv(width, width, stride=2, bias=False),
            *(_Block(width, width) for _ in range(3)),
        ]

    return nn.Sequential(
        _conv(3, width),
        _Block(width, width),
        *stage(),
        *stage(),
        _conv(width, width, stride=2, bias=False),
        *(_Block(width, width, pool_channels) for _ in range(3)),
        _conv(width, latent_channels),
    )


def _taesd_decoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    def stage() -> list[nn.Module]:
        return [
            nn.Upsample(scale_factor=2),
            _conv(width, width, bias=False),
            *(_Block(width, width) for _ in range(3)),
        ]

    return nn.Sequential(
        _Clamp(),
        _conv(latent_channels, width),
        nn.ReLU(),
        *(_Block(width, width, pool_channels) for _ in range(3)),
        *stage(),
        *stage(),
        nn.Upsample(scale_factor=2),
        _conv(width, width, bias=False),
        _Block(width, width),
        _conv(width, 3),
    )


# Key whose shape gives (width, latent channels) and first block that may hold the pool branch.
_TAESD_LAYOUT = {
    "encoder": {"in": "0.weight", "out": "14.weight", "pool": "11.pool.0.weight"},
    "decoder": {"in": "1.weight", "out": "19.weight", "pool": "3.pool.0.weight"},
}


def _read_state_dict(path: Path, part: str) -> dict[str, Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise ValueError(
            f"could not read the TAESD {part} weights in {path}: the file is not a PyTorch "
            f"state dict or is damaged ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, Tensor) for value in state_dict.values()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors (TAESD {part})")
    return dict(state_dict)


def _build_taesd_part(state_dict: Mapping[str, Tensor], part: str, source: str) -> nn.Sequential:
    """Build the encoder or decoder whose layout the state dict describes, and load it."""
    keys = _TAESD_LAYOUT[part]
    missing = [keys[k] for k in ("in", "out") if keys[k] not in state_dict]
    if missing:
        raise ValueError(
            f"{source} is not a TAESD {part} state dict: missing {missing}; expected the "
            f"nn.Sequential layout of the TAESD family ({_TAESD_HOME})"
        )
    first, last = state_dict[keys["in"]], state_dict[keys["out"]]
    if part == "encoder":
        width, latent_channels, image_channels = first.shape[0], last.shape[0], first.shape[1]
    else:
        width, latent_channels, image_channels = first.shape[0], first.shape[1], last.shape[0]
    if image_channels != 3:
        raise ValueError(
            f"{source}: expected a TAESD {part} for 3-channel images, the state dict has "
            f"{image_channels} image channels"
        )
    pool = state_dict.get(keys["pool"])
    build = _taesd_encoder if part == "encoder" else _taesd_decoder
    module = build(width, latent_channels, None if pool is None else pool.shape[0])
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{source} does not match the TAESD {part} layout deduced from it (width {width}, "
            f"{latent_channels} latent channels, pooling branch: {pool is not None}): {err}"
        ) from err
    return module.eval()


class TAESDAutoencoder(Autoencoder):
    """The TAESD family of tiny autoencoders (``taesd``, ``taesdxl``, ``taesd3``, ``taef1``,
    ``taef2``), loaded from their ``.pth`` state dicts.

    The layout (latent channels, block width, whether the mid blocks have the GroupNorm pooling
    branch of ``taef2``) is read from the state dicts, not from the file names. The models take
    images in ``[0, 1]``, downsample by 8, and have no latent scaling; the decoder starts with
    the soft clamp ``tanh(z / 3) * 3``.

    Parameters
    ----------
    encoder, decoder : str, os.PathLike or Mapping[str, Tensor]
        The ``<name>_encoder.pth`` and ``<name>_decoder.pth`` files, or their state dicts.
    name : str, optional
        Name for messages; defaults to the file prefix and directory.

    Raises
    ------
    ValueError
        If a file cannot be read as a state dict, does not match the TAESD layout, or the
        encoder and decoder disagree on the latent channels; the message names the file.

    Examples
    --------
    With the weights of a TAESD-family member in a directory:

    >>> ae = TAESDAutoencoder.from_directory("weights/taef2")  # doctest: +SKIP
    >>> ae.factor, ae.latent_channels  # doctest: +SKIP
    (8, 32)
    """

    def __init__(
        self,
        encoder: str | os.PathLike | Mapping[str, Tensor],
        decoder: str | os.PathLike | Mapping[str, Tensor],
        *,
        name: str | None = None,
    ) -> None:
        parts = {}
        for part, source in (("encoder", encoder), ("decoder", decoder)):
            if isinstance(source, Mapping):
                parts[part] = _build_taesd_part(source, part, f"the {part} state dict")
            else:
                path = Path(source)
                parts[part] = _build_taesd_part(_read_state_dict(path, part), part, str(path))
        self.encoder, self.decoder = parts["encoder"], parts["decoder"]
        encoder_channels = self.encoder[-1].out_channels
        decoder_channels = self.decoder[1].in_channels
        if encoder_channels != decoder_channels:
            raise ValueError(
                f"TAESD encoder ({encoder}) gives {encoder_channels} latent channels but the "
                f"decoder ({decoder}) expects {decoder_channels}: they are not a pair"
            )
        if name is None:
            name = "TAESD"
            if not isinstance(encoder, Mapping):
                path = Path(encoder)
                name = f"{path.stem.removesuffix('_encoder')} ({path.parent})"
        super().__init__(factor=8, latent_channels=encoder_channels, name=name)

    @classmethod
    def from_directory(cls, path: str | os.PathLike, name: str | None = None) -> TAESDAutoencoder:
        """Load the ``<name>_encoder.pth`` / ``<name>_decoder.pth`` pair found in ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            Directory holding the pair.
        name : str, optional
            File prefix, e.g. ``"taef2"``. By default the single pair in the directory, or the
            one named like the directory when there are several.

        Returns
        -------
        TAESDAutoencoder

        Raises
        ------
        AutoencoderNotFoundError
            If the directory or the pair is missing.
        ValueError
            If several pairs are present and ``name`` does not choose one.
        """
        path = Path(path)
        if not path.is_dir():
            raise AutoencoderNotFoundError(f"TAESD weights directory {path} does not exist")
        if name is None:
            prefixes = _taesd_prefixes(path)
            if not prefixes:
                raise AutoencoderNotFoundError(
                    f"no <name>_encoder.pth + <name>_decoder.pth pair in {path}"
                )
            if path.name in prefixes:
                name = path.name
            elif len(prefixes) == 1:
                name = prefixes[0]
            else:
                raise ValueError(f"{path} holds several TAESD pairs {prefixes}; pass name=")
        encoder, decoder = path / f"{name}_encoder.pth", path / f"{name}_decoder.pth"
        for file in (encoder, decoder):
            if not file.is_file():
                raise AutoencoderNotFoundError(f"TAESD weights file {file} does not exist")
        return cls(encoder, decoder, name=f"{name} ({path})")

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.encoder(images)

    def _decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.encoder.to(device=device, dtype=dtype)
        self.decoder.to(device=device, dtype=dtype)


def _taesd_prefixes(path: Path) -> list[str]:
    suffix = "_encoder.pth"
    return sorted(
        file.name.removesuffix(suffix)
        for file in path.glob(f"*{suffix}")
        if (path / file.name.replace(suffix, "_decoder.pth")).is_file()
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_DIFFUSERS_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _wrap_diffusers(model: Any, sample_latent: bool) -> Autoencoder | None:
    """The adapter for a diffusers autoencoder instance, or None if ``model`` is not one."""
    if "diffusers" not in sys.modules:  # no diffusers model can exist yet: skip the import
        return None
    import diffusers

    if isinstance(model, diffusers.AutoencoderKL):
        return DiffusersKLAutoencoder(model, sample_latent=sample_latent)
    if isinstance(model, diffusers.AutoencoderTiny):
        return DiffusersTinyAutoencoder(model)
    return None


def _diffusers_class(class_name: Any, source: str) -> Any:
    import diffusers

    if class_name not in _DIFFUSERS_CLASSES:
        raise ValueError(
            f"{source}: autoencoder class {class_name!r} is not supported; "
            f"supported diffusers classes: {', '.join(_DIFFUSERS_CLASSES)}"
        )
    return getattr(diffusers, class_name)


def _load_directory(path: Path, dtype: torch.dtype, sample_latent: bool) -> Autoencoder:
    """A diffusers model directory (or pipeline with a ``vae/``) or a TAESD ``.pth`` pair."""
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{config_file} is not a diffusers config (JSON object)") from err
        cls = _diffusers_class(class_name, str(config_file))
        model = cls.from_pretrained(path, torch_dtype=dtype)
        return _wrap_diffusers(model, sample_latent)
    if _taesd_prefixes(path):
        return TAESDAutoencoder.from_directory(path)
    raise AutoencoderNotFoundError(
        f"{path} holds neither a diffusers autoencoder (config.json and weights) nor a TAESD "
        f"pair <name>_encoder.pth + <name>_decoder.pth"
    )


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:limit]}"


def _load_by_name(
    spec: str, dtype: torch.dtype, sample_latent: bool, models_dir: str | os.PathLike | None
) -> Autoencoder:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, dtype, sample_latent)
    if path.is_file():
        raise ValueError(
            f"vae={spec!r} is a file; pass the directory holding the autoencoder "
            f"(a diffusers config.json and weights, or a <name>_encoder.pth/_decoder.pth pair)"
        )

    if spec in PRESETS:
        hub_id, local_name = PRESETS[spec].hub_id, spec
    elif spec.count("/") == 1 and all(spec.split("/")) and not spec.startswith((".", "~")):
        hub_id, local_name = spec, spec.split("/")[1]
    else:
        raise AutoencoderNotFoundError(
            f"unknown autoencoder {spec!r}: not an existing directory, not a preset "
            f"({', '.join(PRESETS)}), not a Hugging Face hub id 'owner/name'"
        )

    looked = [f"{path.resolve()} (as a path; no such directory)"]
    root = models_dir if models_dir is not None else os.environ.get(MODELS_DIR_ENV)
    if root:
        candidate = Path(root).expanduser() / local_name
        if candidate.is_dir():
            return _load_directory(candidate, dtype, sample_latent)
        origin = "models_dir" if models_dir is not None else f"${MODELS_DIR_ENV}"
        looked.append(f"{candidate} ({origin}; not found)")
    else:
        looked.append(f"no local models directory (models_dir not given, ${MODELS_DIR_ENV} unset)")

    how = (
        f"To use a local copy, put it in <models dir>/{local_name}/ and set {MODELS_DIR_ENV} "
        f"(or pass models_dir=), or pass the directory itself as vae."
    )
    if hub_id is None:
        raise AutoencoderNotFoundError(
            f"autoencoder {spec!r} not found; it cannot be loaded from the Hugging Face hub: "
            f"download {local_name}_encoder.pth and {local_name}_decoder.pth from {_TAESD_HOME}. "
            f"Looked in: " + "; ".join(looked) + ". " + how
        )

    def not_found(err: BaseException) -> AutoencoderNotFoundError:
        looked.append(f"Hugging Face hub id {hub_id!r} ({_first_line(err)})")
        message = f"autoencoder {spec!r} not found. Looked in: " + "; ".join(looked) + ". "
        return AutoencoderNotFoundError(message + how)

    # diffusers goes through huggingface_hub: HF_HUB_OFFLINE, HF_HOME and its cache apply.
    import diffusers

    try:
        config = diffusers.AutoencoderKL.load_config(hub_id)
    except (OSError, ValueError) as err:  # ValueError: a malformed hub id
        raise not_found(err) from err
    cls = _diffusers_class(config.get("_class_name"), hub_id)
    try:
        model = cls.from_pretrained(hub_id, torch_dtype=dtype)
    except OSError as err:  # e.g. offline with the config cached but not the weights
        raise not_found(err) from err
    return _wrap_diffusers(model, sample_latent)


def load_autoencoder(
    vae: Any,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    sample_latent: bool = False,
    models_dir: str | os.PathLike | None = None,
) -> Autoencoder:
    """Resolve ``vae`` to an :class:`Autoencoder` on ``device`` with compute dtype ``dtype``.

    Parameters
    ----------
    vae : Autoencoder, diffusers model, str or os.PathLike
        One of

        - an :class:`Autoencoder`: returned itself, moved to ``device`` / ``dtype``;
        - a ``diffusers.AutoencoderKL`` or ``diffusers.AutoencoderTiny``: wrapped (and moved,
          in place);
        - ``"pixel"``: the identity (:class:`PixelAutoencoder`);
        - a preset name from :data:`PRESETS`, e.g. ``"sd-vae-ft-mse"`` or ``"taef2"``;
        - a local directory: a diffusers model (``config.json`` with ``_class_name``
          ``AutoencoderKL`` or ``AutoencoderTiny``, or a pipeline with a ``vae/`` folder), or a
          TAESD-family pair ``<name>_encoder.pth`` + ``<name>_decoder.pth``;
        - a Hugging Face hub id ``"owner/name"``, loaded with diffusers ``from_pretrained``
          (``HF_HUB_OFFLINE`` and the Hugging Face cache apply).

        For a preset or hub id, ``<models_dir>/<preset or name>/`` is tried before the hub.
    device : str or torch.device, default "cpu"
        Where the model runs.
    dtype : torch.dtype or str, optional
        Compute dtype; None means float32. float16 / bfloat16 work where the model and device
        support them. Outputs are float32 whatever the compute dtype.
    sample_latent : bool, default False
        Sample the latent distribution instead of taking its mean (``AutoencoderKL`` only;
        deterministic autoencoders raise ``ValueError``). An :class:`Autoencoder` instance
        keeps its own setting.
    models_dir : str or os.PathLike, optional
        Directory of local model copies; defaults to the environment variable
        :data:`MODELS_DIR_ENV` (``LATENT_OT_MODELS_DIR``).

    Returns
    -------
    Autoencoder

    Raises
    ------
    AutoencoderNotFoundError
        If the model is found neither locally nor on the hub; the message lists every place
        looked in and how to supply a local copy.
    TypeError
        If ``vae`` is of an unsupported type.
    ValueError
        If a local file is damaged or does not match the expected layout, or ``sample_latent``
        is asked of a deterministic autoencoder.

    Examples
    --------
    >>> import torch
    >>> ae = load_autoencoder("pixel")
    >>> ae.factor, ae.latent_channels, ae.dtype
    (1, 3, torch.float32)

    With ``LATENT_OT_MODELS_DIR`` pointing at a directory holding ``taef2/``:

    >>> ae = load_autoencoder("taef2", device="cuda")  # doctest: +SKIP
    """
    dtype = _as_dtype(dtype)
    if isinstance(vae, Autoencoder):
        if sample_latent and not vae.sample_latent:
            raise ValueError(
                f"sample_latent=True but {vae.name} was built without latent sampling; "
                f"build the adapter with sample_latent=True instead"
            )
        autoencoder = vae
    elif isinstance(vae, (str, os.PathLike)):
        if os.fspath(vae) == "pixel":
            autoencoder = PixelAutoencoder()
        else:
            autoencoder = _load_by_name(os.fspath(vae), dtype, sample_latent, models_dir)
    else:
        autoencoder = _wrap_diffusers(vae, sample_latent)
        if autoencoder is None:
            raise TypeError(
                "vae must be an Autoencoder, a diffusers AutoencoderKL or AutoencoderTiny, "
                f"a preset name, a hub id or a directory; got {type(vae).__name__}"
            )
    if sample_latent and not autoencoder.sample_latent:
        raise ValueError(
            f"sample_latent=True, but {autoencoder.name} has a deterministic encoder "
            f"(only diffusers AutoencoderKL has a latent distribution to sample)"
        )
    return autoencoder.to(device=device, dtype=dtype)
