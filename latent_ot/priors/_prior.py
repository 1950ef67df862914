"""NaturalPrior: natural-image patch statistics by image scale and patch size, in a safe file."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..exceptions import IncompatibleAutoencoderError
from ..file_contents import SYMMETRY_RTOL, prior_key, symmetric_from_upper, upper_triangle
from ..provenance import check_same_autoencoder
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
    fingerprint : str or None
        The sha256 of the autoencoder's weights (:meth:`Autoencoder.fingerprint
        <latent_ot.autoencoders.Autoencoder.fingerprint>`), checked by
        :meth:`check_autoencoder`; None: not recorded, not checked.

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
    fingerprint: str | None = field(default=None)

    def __post_init__(self) -> None:
        for key, stats in self.stats.items():
            if stats.count < 2:
                raise ValueError(
                    f"stats[{key}] holds {stats.count} vector(s): a covariance needs at least 2"
                )

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

    def at_scale(self, side: float) -> NaturalPrior:
        """This prior with one scale only: the one nearest to ``side`` pixels (long side).

        ``fit`` then uses that scale whatever the size of the restored images; crops cut at
        full resolution from large photos call for it, since their texture is that of the
        photos, not of images of the crops' size.

        Examples
        --------
        >>> import torch
        >>> stats = GaussianStats.from_samples(torch.randn(100, 4, dtype=torch.float64))
        >>> prior = NaturalPrior(
        ...     "pixel", 4, 1, {(256, 1): stats, (1024, 1): stats}, {256: 200.0, 1024: 800.0},
        ...     {256: 3, 1024: 3})
        >>> prior.at_scale(900).scales
        (1024,)
        """
        if not (isinstance(side, int | float) and not isinstance(side, bool) and side > 0):
            raise ValueError(f"side must be a positive number of pixels, got {side!r}")
        chosen = min(self.scales, key=lambda scale: abs(math.log(scale / side)))
        return dataclasses.replace(
            self,
            stats=MappingProxyType({k: v for k, v in self.stats.items() if k[0] == chosen}),
            sides=MappingProxyType({chosen: self.sides[chosen]}),
            n_images=MappingProxyType({chosen: self.n_images[chosen]}),
        )

    def __reduce__(self) -> tuple:
        # Read-only mappings do not pickle (nor deep-copy, as scikit-learn's clone does);
        # plain copies do, and are made read-only again on the way in.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("stats", "sides", "n_images"):
            values[name] = dict(values[name])
        return (_unpickle_prior, (values,))

    def check_matches(self, latent_channels: int, factor: int, name: str) -> None:
        """Raise ``ValueError`` unless the prior was built with such an autoencoder."""
        if (latent_channels, factor) != (self.latent_channels, self.factor):
            raise IncompatibleAutoencoderError(
                f"prior: it was built with {self.autoencoder} ({self.latent_channels} latent "
                f"channels, factor {self.factor}), but the autoencoder {name} has "
                f"{latent_channels} channels and factor {factor}; build a prior with this "
                "autoencoder (latent_ot.priors.build_prior) or pass natural images"
            )

    def check_autoencoder(self, autoencoder: Any, *, check_fingerprint: bool = True) -> None:
        """Raise unless the prior was built with ``autoencoder``: same latent channels and
        factor, and (unless ``check_fingerprint=False``, or the prior records none) the same
        weights, by their fingerprint.

        Raises
        ------
        IncompatibleAutoencoderError
            Naming both autoencoders (a ``ValueError``).

        Examples
        --------
        >>> from latent_ot.autoencoders import load_autoencoder
        >>> builtin_prior("taef2").check_autoencoder(load_autoencoder("taef2"))
        """
        self.check_matches(autoencoder.latent_channels, autoencoder.factor, autoencoder.name)
        if check_fingerprint and self.fingerprint is not None:
            recorded = {"name": self.autoencoder, "fingerprint": self.fingerprint}
            check_same_autoencoder(
                recorded,
                autoencoder,
                what="this prior",
                override="check_autoencoder=False to NaturalPrior.load",
            )

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float64) -> None:
        """Write the prior to a safe file (safetensors + checksummed JSON, no code).

        Each scatter matrix is stored as its upper triangle, which halves the file: a
        symmetric one round-trips exactly. One whose asymmetry is within round-off
        (:data:`~latent_ot.file_contents.SYMMETRY_RTOL` of its largest entry) is stored as
        its symmetric part ``(S + S^T) / 2``; a larger asymmetry raises ``ValueError``.

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
            key = prior_key(scale, patch_size)
            tensors[f"{key}.mean"] = stats.mean.to(dtype)
            tensors[f"{key}.scatter"] = upper_triangle(
                _symmetric(stats.scatter, (scale, patch_size))
            ).to(dtype)
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
        if self.fingerprint is not None:
            metadata["autoencoder_fingerprint"] = self.fingerprint
        write_operator(path, tensors, metadata)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        sha256: str | None = None,
        check_autoencoder: bool = True,
    ) -> NaturalPrior:
        """Read a prior written by :meth:`save`; nothing in the file is executed.

        Its contents are checked (see :mod:`latent_ot.file_contents`): statistics of at
        least 2 vectors, finite, of the shapes the latent channels imply, symmetric positive
        semi-definite scatters, every scale with statistics for the same patch sizes.
        ``sha256``, the digest of the whole file as published, pins the file (see
        :func:`~latent_ot.serialization.read_operator`). ``check_autoencoder=False`` drops
        the recorded fingerprint of the autoencoder's weights, so that the prior is accepted
        with any autoencoder of the same latent channels and factor: for one known to give
        the same latents (a converted copy, say).

        Raises
        ------
        OperatorFileError
            If the file is not a prior, is damaged, its contents are not valid, or its
            sha256 is not ``sha256``.
        """
        tensors, metadata = read_operator(path, expected_kind=_KIND, sha256=sha256)
        stats = {}
        for key, count in metadata["counts"].items():
            scale, patch_size = (int(part[1:]) for part in key.split("."))
            mean = tensors[f"{key}.mean"].double()
            scatter = tensors[f"{key}.scatter"].double()
            if scatter.ndim == 1:  # the upper triangle that save writes
                scatter = symmetric_from_upper(scatter, mean.shape[0])
            stats[(scale, patch_size)] = GaussianStats.from_state(count, mean, scatter)
        return cls(
            autoencoder=metadata["autoencoder"],
            latent_channels=metadata["latent_channels"],
            factor=metadata["factor"],
            stats=MappingProxyType(stats),
            sides=_by_scale(metadata["sides"]),
            n_images=_by_scale(metadata["n_images"]),
            description=metadata["description"],
            fingerprint=metadata.get("autoencoder_fingerprint") if check_autoencoder else None,
        )


def _symmetric(scatter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """``scatter`` if symmetric, its symmetric part if only round-off breaks the symmetry."""
    if torch.equal(scatter, scatter.mT):
        return scatter
    asymmetry = float((scatter - scatter.mT).abs().max())
    if asymmetry > SYMMETRY_RTOL * float(scatter.abs().max()):
        raise ValueError(
            f"stats[{key}]: its scatter matrix is not symmetric (max asymmetry "
            f"{asymmetry:.1e}); a prior holds symmetric scatter matrices"
        )
    return (scatter + scatter.mT) / 2


def _unpickle_prior(values: dict[str, Any]) -> NaturalPrior:
    for name in ("stats", "sides", "n_images"):
        values[name] = MappingProxyType(values[name])
    return NaturalPrior(**values)


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
