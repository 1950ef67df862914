"""The TAESD family of tiny autoencoders, built from their published ``.pth`` state dicts.

TAESD ("Tiny AutoEncoder for Stable Diffusion" by madebyollin, MIT license,
https://github.com/madebyollin/taesd) has one member per latent space: ``taesd`` (SD 1/2, 4
latent channels), ``taesdxl``, ``taesd3`` and ``taef1`` (16), ``taef2`` (FLUX.2, 32). Each is
an encoder and a decoder saved as ``nn.Sequential`` state dicts, ``<name>_encoder.pth`` and
``<name>_decoder.pth``. The network below is the published one, index for index, so that those
files load as they are:

- ``conv(i, o)``: a 3x3 convolution with padding 1; ``Block``: three of them with ReLUs
  between, plus a skip, then a ReLU; newer members (``taef2``) add to the mid blocks a
  "pooling" branch (1x1 conv, ``GroupNorm(4, .)``, ReLU, 1x1 conv), applied first as
  ``x + pool(x)``.
- Encoder: ``0`` conv(3, 64), ``1`` Block, then three stages of a stride-2 conv without bias and
  three Blocks (``2-5``, ``6-9``, ``10-13``, the last with the pooling branch), ``14``
  conv(64, latent channels).
- Decoder: ``0`` soft clamp ``tanh(x / 3) * 3``, ``1`` conv(latent channels, 64), ``2`` ReLU,
  ``3-5`` Blocks (with the pooling branch), then three stages of a 2x nearest upsample, a conv
  without bias and Blocks (``6-10``, ``11-15``, ``16-18`` with one Block), ``19`` conv(64, 3).

diffusers' ``AutoencoderTiny`` has the same layout without the pooling branch, so it cannot
load ``taef2``; this implementation loads every member.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..exceptions import AutoencoderNotFoundError
from ._base import Autoencoder

_TAESD_HOME = "https://github.com/madebyollin/taesd"


def _conv(n_in: int, n_out: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


def _relu() -> nn.ReLU:
    # In place: every ReLU here follows a layer whose output nothing else reads, so it can
    # overwrite it, which spares a full-size tensor per ReLU (the same outputs, bit for bit,
    # and less memory traffic). The state dicts do not change.
    return nn.ReLU(inplace=True)


class _Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """TAESD residual block, with the optional GroupNorm "pooling" branch of newer members."""

    def __init__(self, n_in: int, n_out: int, pool_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), _relu(), _conv(n_out, n_out), _relu(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = _relu()
        self.pool = None
        if pool_channels:
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, pool_channels, 1, bias=False),
                nn.GroupNorm(4, pool_channels),
                _relu(),
                nn.Conv2d(pool_channels, n_in, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        # The sums are written into the freshly computed branch outputs, which nothing else
        # reads (the same values as ``x + pool(x)`` and ``conv(x) + skip(x)``, one full-size
        # tensor fewer each).
        if self.pool is not None:
            x = self.pool(x).add_(x)
        return self.fuse(self.conv(x).add_(self.skip(x)))


def _taesd_encoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    """The encoder, indices as published; ``pool_channels``: the mid blocks' pooling branch."""

    def block(pool: int | None = None) -> _Block:
        return _Block(width, width, pool)

    def down() -> nn.Conv2d:
        return _conv(width, width, stride=2, bias=False)

    return nn.Sequential(
        _conv(3, width), block(),  # 0-1: full resolution
        down(), block(), block(), block(),  # 2-5: 1/2
        down(), block(), block(), block(),  # 6-9: 1/4
        down(), *(block(pool_channels) for _ in range(3)),  # 10-13: 1/8, the latent's
        _conv(width, latent_channels),  # 14
    )  # fmt: skip


def _taesd_decoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    """The decoder, indices as published; ``pool_channels``: the mid blocks' pooling branch."""

    def block(pool: int | None = None) -> _Block:
        return _Block(width, width, pool)

    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), _conv(width, width, bias=False)]

    return nn.Sequential(
        _Clamp(), _conv(latent_channels, width), _relu(),  # 0-2
        *(block(pool_channels) for _ in range(3)),  # 3-5: 1/8, the latent's resolution
        *up(), block(), block(), block(),  # 6-10: 1/4
        *up(), block(), block(), block(),  # 11-15: 1/2
        *up(), block(),  # 16-18: full resolution
        _conv(width, 3),  # 19
    )  # fmt: skip


# Key whose shape gives (width, latent channels) and first block that may hold the pool branch.
_TAESD_LAYOUT = {
    "encoder": {"in": "0.weight", "out": "14.weight", "pool": "11.pool.0.weight"},
    "decoder": {"in": "1.weight", "out": "19.weight", "pool": "3.pool.0.weight"},
}


# Where the latent-resolution layers end (encoder) or begin (decoder): see TAESDAutoencoder.
_TAESD_SPLIT = {"encoder": 11, "decoder": 6}

# Activation values per input pixel at the peak of an encode + decode, per channel of the
# full-resolution layers: TAEF2 (64 channels) peaked at 1.0 to 1.6 KB per pixel above the
# model on the CPU in float32 (512 to 1024 px, freed memory kept for reuse), so 6 x 64 x 4 B.
_TAESD_ACTIVATIONS_PER_WIDTH = 6


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

    Tiling (:meth:`~Autoencoder.set_tiling`) is exact: only the convolutions above the latent
    resolution are tiled, each tile with 64 px of context on its inner sides, which covers what
    they see; the layers at the latent resolution, whose GroupNorm (``taef2``) spans the whole
    image, run untiled. Tiled and untiled TAEF2 outputs of a 1024 px image differ by about
    1e-7.

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
    The TAEF2 pair bundled with the package (any directory holding a pair loads the same way):

    >>> from latent_ot.autoencoders import BUNDLED_WEIGHTS
    >>> ae = TAESDAutoencoder.from_directory(BUNDLED_WEIGHTS / "taef2")
    >>> ae.factor, ae.latent_channels
    (8, 32)
    """

    _convolutional = True

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

    # Only the layers above the latent resolution are tiled: they are convolutions and ReLUs,
    # which tiles with enough context reproduce exactly, and they hold nearly all the memory.
    # The layers at the latent resolution run on the whole image: they are cheap, and taef2's
    # pooling branch has a GroupNorm whose statistics span the image (tiling them measurably
    # changes the latents, by ~0.07 mean absolute difference for 512 px tiles of a 1024 px image).

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        split = _TAESD_SPLIT["encoder"]
        return self.encoder[split:](self._tile_images(self.encoder[:split], image))

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        split = _TAESD_SPLIT["decoder"]
        return self._tile_latents(self.decoder[split:], self.decoder[:split](latents))

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.encoder.to(device=device, dtype=dtype)
        self.decoder.to(device=device, dtype=dtype)

    def _set_module_format(self, memory_format: torch.memory_format) -> None:
        self.encoder.to(memory_format=memory_format)
        self.decoder.to(memory_format=memory_format)

    def _activation_elements_per_pixel(self) -> float:
        return _TAESD_ACTIVATIONS_PER_WIDTH * self.encoder[0].out_channels


def _taesd_prefixes(path: Path) -> list[str]:
    suffix = "_encoder.pth"
    return sorted(
        file.name.removesuffix(suffix)
        for file in path.glob(f"*{suffix}")
        if (path / file.name.replace(suffix, "_decoder.pth")).is_file()
    )
