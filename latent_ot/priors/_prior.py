"""NaturalPrior: natural-image patch statistics by image scale and patch size, in a safe file."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..exceptions import OperatorFileError
from ..serialization import read_operator, write_operator
from ..stats import GaussianStats

__all__ = [
    "BUILTIN_PRIORS",
    "NaturalPrior",
    "builtin_prior",
    "has_builtin_prior",
    "load_prior",
    "restored_image_side",
]

BUILTIN_PRIORS: Mapping[str, str] = MappingProxyType({"taef2": "taef2.safetensors"})
"""Autoencoder name -> file of its built-in prior, shipped in this package."""

_KIND = "NaturalPrior"


@dataclass(frozen=True)
class NaturalPrior:
    """Latent patch statistics of natural photos, for one autoencoder, at several scales.

    Attributes
    ----------
    autoencoder : str
        Name of the autoencoder that encoded the photos (``Autoencoder.name``).
    latent_channels, factor : int
        Its latent channels and downsampling factor.
    stats : mapping of (int, int) to GaussianStats
        ``(scale, patch_size)`` to the statistics of all patches of that size, with the photos
        resized so that their long side is ``scale`` pixels.
    sides : mapping of int to float
        ``scale`` to the side, in pixels, of the square whose area is the mean area of the
        photos at that scale; what the size of the images being fitted is compared with.
    n_images : mapping of int to int
        ``scale`` to the number of photos.
    description : str
        Where the photos came from.

    Examples
    --------
    >>> import torch
    >>> stats = GaussianStats.from_samples(torch.randn(100, 4, dtype=torch.float64))
    >>> prior = NaturalPrior("pixel", 4, 1, {(512, 1): stats}, {512: 400.0}, {512: 3})
    >>> prior.select(patch_size=1, image_side=300)[1]
    512
    """

    autoencoder: str
    latent_channels: int
    factor: int
    stats: Mapping[tuple[int, int], GaussianStats]
    sides: Mapping[int, float]
    n_images: Mapping[int, int]
    description: str = field(default="")

    @property
    def scales(self) -> tuple[int, ...]:
        """The image scales (long side in pixels) the prior holds."""
        return tuple(sorted(self.sides))

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """The patch sizes the prior holds."""
        return tuple(sorted({patch_size for _, patch_size in self.stats}))

    def nearest_scale(self, image_side: float) -> int:
        """The scale whose photos' size is nearest to ``image_side`` pixels (on a log scale)."""
        if not (isinstance(image_side, int | float) and image_side > 0):
            raise ValueError(f"image_side must be a positive number, got {image_side!r}")
        return min(self.scales, key=lambda scale: abs(math.log(self.sides[scale] / image_side)))

    def select(
        self, patch_size: int, image_side: float, *, scale: int | None = None
    ) -> tuple[GaussianStats, int]:
        """The statistics for ``patch_size`` at the scale nearest to ``image_side``.

        ``scale`` (a long side in pixels), when given, chooses the scale instead: the one
        nearest to it on a log scale. Crops cut at full resolution from large photos call for
        it: their texture is that of the photos, not of images of the crops' size.

        Returns
        -------
        (GaussianStats, int)
            A copy of the statistics, and the scale they were taken at.
        """
        if patch_size not in self.patch_sizes:
            raise ValueError(
                f"patch_size={patch_size}: this natural prior ({self.autoencoder}) holds patch "
                f"sizes {list(self.patch_sizes)}; use one of them, pass natural images to fit, "
                "or build a prior with that patch size (latent_ot.priors.build_prior)"
            )
        if scale is None:
            chosen = self.nearest_scale(image_side)
        else:
            chosen = min(self.scales, key=lambda named: abs(math.log(named / scale)))
        return self.stats[(chosen, patch_size)].copy(), chosen

    def check_matches(self, latent_channels: int, factor: int, name: str) -> None:
        """Raise ``ValueError`` unless the prior was built with such an autoencoder."""
        if (latent_channels, factor) != (self.latent_channels, self.factor):
            raise ValueError(
                f"prior: it was built with {self.autoencoder} ({self.latent_channels} latent "
                f"channels, factor {self.factor}), but the autoencoder {name} has "
                f"{latent_channels} channels and factor {factor}; build a prior with this "
                "autoencoder (latent_ot.priors.build_prior) or pass natural images"
            )

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float64) -> None:
        """Write the prior to a safe file (safetensors + checksummed JSON, no code).

        Each scatter matrix is symmetric and stored as its upper triangle, which halves the
        file and loses nothing.

        Parameters
        ----------
        path : str or os.PathLike
        dtype : torch.float64 or torch.float32, default torch.float64
            Storage precision; :meth:`load` computes in float64 either way. float64 gives
            the statistics back bit for bit; float32 halves the file again, and its rounding
            (about 1e-7 relative) is far below the sampling error of statistics estimated
            from a few hundred thousand patch vectors (the shipped priors use it).
        """
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        tensors, counts = {}, {}
        for (scale, patch_size), stats in self.stats.items():
            key = f"s{scale}.p{patch_size}"
            tensors[f"{key}.mean"] = stats.mean.to(dtype)
            tensors[f"{key}.scatter"] = _upper_triangle(stats.scatter).to(dtype)
            counts[key] = stats.count
        metadata = {
            "kind": _KIND,
            "autoencoder": self.autoencoder,
            "latent_channels": self.latent_channels,
            "factor": self.factor,
            "counts": counts,
            "sides": {str(scale): side for scale, side in self.sides.items()},
            "n_images": {str(scale): n for scale, n in self.n_images.items()},
            "description": self.description,
        }
        write_operator(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NaturalPrior:
        """Read a prior written by :meth:`save`; nothing in the file is executed."""
        tensors, metadata = read_operator(path, expected_kind=_KIND)
        stats = {}
        for key, count in metadata["counts"].items():
            scale, patch_size = (int(part[1:]) for part in key.split("."))
            mean = tensors[f"{key}.mean"].double()
            scatter = tensors[f"{key}.scatter"].double()
            if scatter.ndim == 1:  # the upper triangle that save writes
                scatter = _symmetric_from_upper(scatter, mean.shape[0])
            stats[(scale, patch_size)] = GaussianStats.from_state(count, mean, scatter)
        return cls(
            autoencoder=metadata["autoencoder"],
            latent_channels=metadata["latent_channels"],
            factor=metadata["factor"],
            stats=MappingProxyType(stats),
            sides=_by_scale(metadata["sides"]),
            n_images=_by_scale(metadata["n_images"]),
            description=metadata["description"],
        )


def _upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    rows, columns = torch.triu_indices(*matrix.shape)
    return matrix[rows, columns]


def _symmetric_from_upper(values: torch.Tensor, size: int) -> torch.Tensor:
    """The symmetric ``size x size`` matrix whose upper triangle, row by row, is ``values``."""
    if values.numel() != size * (size + 1) // 2:
        raise OperatorFileError(
            f"a scatter matrix of the prior holds {values.numel()} values; its mean has {size} "
            f"entries, so {size * (size + 1) // 2} were expected"
        )
    matrix = values.new_zeros(size, size)
    rows, columns = torch.triu_indices(size, size)
    matrix[rows, columns] = values
    matrix[columns, rows] = values
    return matrix


def _by_scale(values: dict[str, Any]) -> Mapping[int, Any]:
    """A JSON object keyed by scale, as a read-only mapping in increasing scale."""
    return MappingProxyType({int(k): values[k] for k in sorted(values, key=int)})


def _no_builtin(name: str) -> ValueError:
    return ValueError(
        f"natural: no natural images were given, and the autoencoder {name!r} has no built-in "
        f"natural prior (built-in: {', '.join(BUILTIN_PRIORS)}). Pass natural images, "
        "fit(restored, natural), or build a prior from your own photos once, with "
        "latent_ot.priors.build_prior(photos, vae).save('prior.safetensors') or "
        "`latent-ot prior PHOTOS... --vae VAE --output prior.safetensors`, and pass "
        "prior='prior.safetensors'"
    )


def has_builtin_prior(autoencoder: str) -> bool:
    """Whether the autoencoder named ``autoencoder`` has a built-in prior (see below)."""
    return autoencoder.split(" (")[0] in BUILTIN_PRIORS


def builtin_prior(autoencoder: str) -> NaturalPrior:
    """The prior shipped for the autoencoder named ``autoencoder`` (see :data:`BUILTIN_PRIORS`).

    ``autoencoder`` is an :attr:`Autoencoder.name <latent_ot.autoencoders.Autoencoder.name>`;
    where it says where the weights were loaded from, ``"taef2 (/some/dir)"``, that part is
    left out: any copy of the same weights has the same prior.

    Raises
    ------
    ValueError
        If there is none; the message says how to pass natural images or build a prior.
    """
    if not has_builtin_prior(autoencoder):
        raise _no_builtin(autoencoder.split(" (")[0])
    autoencoder = autoencoder.split(" (")[0]
    resource = resources.files(__package__) / BUILTIN_PRIORS[autoencoder]
    with resources.as_file(resource) as path:
        return NaturalPrior.load(path)


def load_prior(prior: Any, autoencoder: str) -> NaturalPrior:
    """``"builtin"`` (the prior of ``autoencoder``), a prior file's path, or a NaturalPrior."""
    if isinstance(prior, NaturalPrior):
        return prior
    if isinstance(prior, str) and prior == "builtin":
        return builtin_prior(autoencoder)
    if isinstance(prior, str | os.PathLike):
        return NaturalPrior.load(Path(prior))
    raise TypeError(
        f"prior must be 'builtin', the path of a prior file or a NaturalPrior, got "
        f"{type(prior).__name__} {prior!r}"
    )


def restored_image_side(patches: int, images: int, patch_size: int, factor: int) -> float:
    """The side, in pixels, of a square image with ``patches / images`` latent patches.

    How ``fit`` judges the size of the restored images from their statistics alone (which
    stream, batch by batch, and merge across processes): an ``h x w`` latent has
    ``(h - p + 1)(w - p + 1)`` patches of side ``p``.

    Examples
    --------
    >>> round(restored_image_side(2 * 62 * 94, 2, 3, 8))  # two 512 x 768: sqrt(512 * 768) = 627
    627
    """
    per_image = patches / max(images, 1)
    return (math.sqrt(per_image) + patch_size - 1) * factor
