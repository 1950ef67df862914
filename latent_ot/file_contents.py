"""What the tensors and metadata of an operator or prior file must mean, checked on load.

:mod:`latent_ot.serialization` proves that a file's bytes are those its writer wrote; its
checksums are computed from the file itself, so they prove nothing about a file rewritten
with edited contents. This module checks what the contents *mean*, for each kind of file
latent-ot writes (:data:`CHECKED_KINDS`), before any of it is used:

- every metadata key that kind needs is present with the right type (ints are ints, not
  ``'32'`` nor ``True``; sizes and counts positive; scales listed with their statistics);
- every tensor is float32 or float64, finite, and of the shape the metadata implies
  (``patch_dim = latent_channels * patch_size ** 2``: means ``(d,)``, scatters and maps
  ``(d, d)``); no tensor is left over;
- scatter matrices and the noise factor of a stochastic map are symmetric, to
  :data:`SYMMETRY_RTOL` of their largest entry, and positive semi-definite: their smallest
  eigenvalue is at least ``-PSD_RTOL[dtype]`` times their largest (the transport matrix is
  not symmetric in general: the stochastic map's ``T = A M A^+ Sigma_s^+`` is not);
- statistics a covariance is computed from hold at least 2 vectors;
- the transport matrix ``T`` sends the source covariance to no more than
  :data:`MAP_VARIANCE_FACTOR` times the target's variance: ``tr(T Sigma_s T^T) <= 2
  tr(Sigma_t)``. Exactly, every map latent-ot fits gives at most ``tr(Sigma_t)`` (the
  deterministic map gives equality, the stochastic one leaves the rest to its noise,
  ``Sigma_w = Sigma_t - T Sigma_s T^T``, and a tolerance cut only removes directions); the
  factor leaves room for round-off, which grows with the condition number of ``Sigma_s``. It
  bounds the gain of an edited map (one scaled by 1e30 is refused) by the statistics stored
  beside it; it cannot tell a map from a slightly different one, which only a refit could.

A problem raises :class:`ContentError`, whose message names the tensor or key and what is
wrong; :func:`latent_ot.serialization.read_operator` turns it into an ``OperatorFileError``
naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "CHECKED_KINDS",
    "MAP_VARIANCE_FACTOR",
    "PSD_RTOL",
    "SYMMETRY_RTOL",
    "ContentError",
    "check_contents",
    "prior_key",
    "symmetric_from_upper",
    "upper_triangle",
]

SYMMETRY_RTOL: float = 1e-6
"""Largest ``|A - A^T|`` allowed, relative to the largest ``|A|``: far above the round-off of
the float64 computations that produce these matrices, far below any meaningful edit."""

PSD_RTOL: dict[torch.dtype, float] = {torch.float64: 1e-9, torch.float32: 1e-4}
"""Smallest eigenvalue allowed, as a fraction of minus the largest, by the stored dtype: the
round-off of an eigen-decomposition of a singular scatter matrix, and for float32 (the shipped
priors) the rounding of its entries."""

MAP_VARIANCE_FACTOR: float = 2.0
"""Bound on ``tr(T Sigma_s T^T) / tr(Sigma_t)`` for the transport matrix ``T`` of a file."""

_FLOAT_DTYPES = (torch.float32, torch.float64)
_MAX_INT = 2**53  # exact in float64; no count or size comes near it
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class ContentError(ValueError):
    """A file's contents do not mean what its kind requires (see the module's checks)."""


def prior_key(scale: int, patch_size: int) -> str:
    """The name a prior file gives the statistics of ``patch_size`` patches at ``scale``.

    Examples
    --------
    >>> prior_key(512, 3)
    's512.p3'
    """
    return f"s{scale}.p{patch_size}"


def upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle of a square matrix, row by row (how a prior file stores scatters)."""
    rows, columns = torch.triu_indices(*matrix.shape)
    return matrix[rows, columns]


def symmetric_from_upper(values: torch.Tensor, size: int) -> torch.Tensor:
    """The symmetric ``size x size`` matrix whose upper triangle, row by row, is ``values``."""
    matrix = values.new_zeros(size, size)
    rows, columns = torch.triu_indices(size, size)
    matrix[rows, columns] = values
    matrix[columns, rows] = values
    return matrix


def check_contents(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Raise :class:`ContentError` unless a file of a kind in :data:`CHECKED_KINDS` means
    what that kind requires; files of other kinds are left to their reader.

    Examples
    --------
    >>> check_contents({"source.mean": torch.zeros(2)}, {"kind": "GaussianOTTransformer"})
    Traceback (most recent call last):
    ...
    latent_ot.file_contents.ContentError: metadata key 'n_features_in' is missing
    """
    check = _CHECKS.get(metadata.get("kind"))
    if check is not None:
        contents = _Contents(tensors, metadata)
        check(contents)
        contents.check_all_tensors_used()


class _Contents:
    """Typed access to a file's tensors and metadata, each access checked, naming what fails."""

    def __init__(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.tensors, self.metadata, self.used = tensors, metadata, set()

    # -- metadata --------------------------------------------------------------------------

    def value(self, path: tuple[str, ...]) -> Any:
        node = self.metadata
        for depth, key in enumerate(path):
            if not isinstance(node, dict):
                raise ContentError(f"metadata key {_dotted(path[:depth])!r} is not an object")
            if key not in node:
                raise ContentError(f"metadata key {_dotted(path[: depth + 1])!r} is missing")
            node = node[key]
        return node

    def integer(self, path: tuple[str, ...], low: int, why: str = "") -> int:
        value = self.value(path)
        if type(value) is not int or not low <= value <= _MAX_INT:
            reason = f": {why}" if why and type(value) is int and value < low else ""
            raise ContentError(
                f"metadata key {_dotted(path)!r} must be an integer in [{low}, 2**53], got "
                f"{value!r}{reason}"
            )
        return value

    def count(self, path: tuple[str, ...]) -> int:
        return self.integer(path, 2, "statistics of fewer than 2 vectors have no covariance")

    def number(self, path: tuple[str, ...], *, positive: bool = False) -> float:
        value = self.value(path)
        valid = type(value) in (int, float) and (value > 0 if positive else value >= 0)
        if not valid:
            expected = "a positive number" if positive else "a number >= 0"
            raise ContentError(f"metadata key {_dotted(path)!r} must be {expected}, got {value!r}")
        return float(value)

    def text(self, path: tuple[str, ...]) -> str:
        value = self.value(path)
        if not isinstance(value, str) or not value:
            raise ContentError(
                f"metadata key {_dotted(path)!r} must be a non-empty string, got {value!r}"
            )
        return value

    def mapping(self, path: tuple[str, ...]) -> dict[str, Any]:
        value = self.value(path)
        if not isinstance(value, dict) or not value:
            raise ContentError(
                f"metadata key {_dotted(path)!r} must be a non-empty object, got {value!r}"
            )
        return value

    def fingerprint(self, path: tuple[str, ...]) -> None:
        value = self.value(path)
        if not isinstance(value, str) or not _FINGERPRINT.fullmatch(value):
            raise ContentError(
                f"metadata key {_dotted(path)!r} must be a sha256 (64 lowercase hexadecimal "
                f"digits), got {value!r}"
            )

    def has(self, path: tuple[str, ...]) -> bool:
        *parents, last = path
        node = self.value(tuple(parents)) if parents else self.metadata
        return isinstance(node, dict) and last in node

    # -- tensors ---------------------------------------------------------------------------

    def tensor(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.tensors:
            raise ContentError(f"tensor {name!r} is missing")
        self.used.add(name)
        tensor = self.tensors[name]
        if tensor.dtype not in _FLOAT_DTYPES:
            raise ContentError(
                f"tensor {name!r} has dtype {_dtype(tensor)}; expected float32 or float64"
            )
        if tuple(tensor.shape) != shape:
            raise ContentError(f"tensor {name!r} has shape {tuple(tensor.shape)}; expected {shape}")
        if not bool(torch.isfinite(tensor).all()):
            raise ContentError(f"tensor {name!r} holds NaN or infinity")
        return tensor

    def symmetric_psd(self, name: str, matrix: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``matrix`` (from tensor ``name`` stored as ``dtype``) checked, in float64."""
        matrix = matrix.to(torch.float64)
        scale = float(matrix.abs().max()) if matrix.numel() else 0.0
        asymmetry = float((matrix - matrix.mT).abs().max()) if matrix.numel() else 0.0
        if asymmetry > SYMMETRY_RTOL * scale:
            raise ContentError(f"tensor {name!r} is not symmetric (max asymmetry {asymmetry:.1e})")
        eigenvalues = torch.linalg.eigvalsh((matrix + matrix.mT) / 2)
        if eigenvalues.numel() and eigenvalues[0] < -PSD_RTOL[dtype] * max(
            float(eigenvalues[-1]), 0.0
        ):
            raise ContentError(
                f"tensor {name!r} is not positive semi-definite (eigenvalues from "
                f"{float(eigenvalues[0]):.3g} to {float(eigenvalues[-1]):.3g})"
            )
        return matrix

    def matrix(self, name: str, size: int) -> torch.Tensor:
        tensor = self.tensor(name, (size, size))
        return self.symmetric_psd(name, tensor, tensor.dtype)

    def check_all_tensors_used(self) -> None:
        unexpected = sorted(self.tensors.keys() - self.used)
        if unexpected:
            raise ContentError(
                f"tensor {unexpected[0]!r} is not part of a {self.metadata['kind']} file"
            )


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------
# The kinds of file


def _stats(contents: _Contents, name: str, size: int) -> torch.Tensor:
    """Check the mean and scatter named ``name``; the scatter, in float64."""
    contents.tensor(f"{name}.mean", (size,))
    return contents.matrix(f"{name}.scatter", size)


def _check_transport(contents: _Contents, prefix: str = "", meta: tuple[str, ...] = ()) -> int:
    """A GaussianOTTransformer's state, its tensors led by ``prefix``, its metadata at ``meta``."""
    size = contents.integer((*meta, "n_features_in"), 1)
    covariances = {}
    for side in ("source", "target"):
        if side == "source" or contents.has((*meta, "counts", side)):
            count = contents.count((*meta, "counts", side))
            covariances[side] = _stats(contents, f"{prefix}{side}", size) / (count - 1)
    contents.number((*meta, "w2"))
    contents.tensor(f"{prefix}map.mean_source", (size,))
    contents.tensor(f"{prefix}map.mean_target", (size,))
    matrix = contents.tensor(f"{prefix}map.matrix", (size, size)).to(torch.float64)
    if f"{prefix}map.noise_factor" in contents.tensors:
        contents.matrix(f"{prefix}map.noise_factor", size)
    _check_map_gain(f"{prefix}map.matrix", matrix, covariances)
    return size


def _check_map_gain(name: str, matrix: torch.Tensor, covariances: dict) -> None:
    source = covariances["source"]
    target = covariances.get("target", source)  # no target: the identity map
    sent = float(torch.trace(matrix @ source @ matrix.mT))
    held = float(torch.trace(target))
    if not sent <= MAP_VARIANCE_FACTOR * held:
        raise ContentError(
            f"tensor {name!r} sends the source covariance to a total variance of {sent:.3g}, "
            f"more than {MAP_VARIANCE_FACTOR:g} times the target's {held:.3g}: it is not the "
            "map of these statistics"
        )


def _check_latent_operator(contents: _Contents) -> None:
    channels = contents.integer(("latent_channels",), 1)
    contents.integer(("factor",), 1)
    size = contents.integer(("patch_dim",), 1)
    if contents.has(("patch_size",)):
        side = contents.integer(("patch_size",), 1)
    else:  # files that give the patch vectors' length only
        side = round((size / channels) ** 0.5)
    if channels * side * side != size:
        raise ContentError(
            f"metadata key 'patch_dim' is {size}: not latent_channels ({channels}) times the "
            f"square of the patch size ({side})"
        )
    for name in ("restored_images", "natural_images"):
        contents.integer(("counts", name), 0)
    contents.count(("counts", "restored"))
    _stats(contents, "restored", size)
    contents.integer(("counts", "natural"), 0)  # 0 when the target came from a prior
    _stats(contents, "natural", size)
    if contents.has(("prior_scale",)) and contents.value(("prior_scale",)) is not None:
        contents.integer(("prior_scale",), 1)  # the prior's scale, None without a prior
    _check_provenance(contents)
    contents.mapping(("transport",))
    if _check_transport(contents, "transport.", ("transport",)) != size:
        raise ContentError(
            f"metadata key 'transport.n_features_in' must equal patch_dim ({size}), got "
            f"{contents.value(('transport', 'n_features_in'))!r}"
        )


def _check_provenance(contents: _Contents) -> None:
    """The autoencoder's name and fingerprint, where the file records them."""
    if contents.has(("autoencoder",)) and isinstance(contents.value(("autoencoder",)), dict):
        contents.text(("autoencoder", "name"))
        contents.fingerprint(("autoencoder", "fingerprint"))


def _check_prior(contents: _Contents) -> None:
    contents.text(("autoencoder",))
    channels = contents.integer(("latent_channels",), 1)
    contents.integer(("factor",), 1)
    if not isinstance(contents.value(("description",)), str):
        raise ContentError("metadata key 'description' must be a string")
    if contents.has(("autoencoder_fingerprint",)):
        contents.fingerprint(("autoencoder_fingerprint",))
    scales = [_scale(key, "sides") for key in contents.mapping(("sides",))]
    for key in contents.mapping(("sides",)):
        contents.number(("sides", key), positive=True)
    if sorted(contents.mapping(("n_images",))) != sorted(contents.mapping(("sides",))):
        raise ContentError("metadata keys 'n_images' and 'sides' must list the same scales")
    for key in contents.mapping(("n_images",)):
        contents.integer(("n_images", key), 1)
    patch_sizes: dict[int, set[int]] = {scale: set() for scale in scales}
    for key in contents.mapping(("counts",)):
        scale, patch_size = _prior_key_parts(key, scales)
        patch_sizes[scale].add(patch_size)
        contents.count(("counts", key))
        size = channels * patch_size**2
        contents.tensor(f"{key}.mean", (size,))
        _prior_scatter(contents, f"{key}.scatter", size)
    _check_same_patch_sizes(patch_sizes)


def _scale(key: str, where: str) -> int:
    if not key.isdigit() or int(key) < 1 or key != str(int(key)):
        raise ContentError(f"metadata key '{where}.{key}' is not a positive integer scale")
    return int(key)


def _prior_key_parts(key: str, scales: list[int]) -> tuple[int, int]:
    match = re.fullmatch(r"s([1-9][0-9]*)\.p([1-9][0-9]*)", key)
    if match is None:
        raise ContentError(f"metadata key 'counts.{key}' is not of the form 's<scale>.p<patch>'")
    scale, patch_size = int(match[1]), int(match[2])
    if scale not in scales:
        raise ContentError(f"metadata key 'counts.{key}' is for scale {scale}, not in 'sides'")
    return scale, patch_size


def _prior_scatter(contents: _Contents, name: str, size: int) -> None:
    stored = contents.tensors.get(name)
    if stored is not None and stored.ndim == 1:  # the upper triangle that NaturalPrior.save writes
        values = contents.tensor(name, (size * (size + 1) // 2,))
        contents.symmetric_psd(name, symmetric_from_upper(values, size), values.dtype)
    else:
        contents.matrix(name, size)


def _check_same_patch_sizes(patch_sizes: dict[int, set[int]]) -> None:
    held = {scale: sorted(sizes) for scale, sizes in patch_sizes.items()}
    first = next(iter(held.values()))
    for scale, sizes in held.items():
        if not sizes:
            raise ContentError(f"scale {scale} is listed in 'sides' but has no statistics")
        if sizes != first:
            raise ContentError(
                f"scale {scale} holds patch sizes {sizes}, another scale {first}: every scale "
                "must hold the same patch sizes"
            )


_CHECKS: dict[str, Callable[[_Contents], None]] = {
    "GaussianOTTransformer": _check_transport,
    "LatentOTTransformer": _check_latent_operator,
    "NaturalPrior": _check_prior,
}

CHECKED_KINDS: tuple[str, ...] = tuple(_CHECKS)
"""The kinds of file whose contents :func:`check_contents` checks."""
