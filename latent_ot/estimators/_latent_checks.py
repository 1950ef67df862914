"""The checks of a LatentOTTransformer: its parameters (and what ``patch_size="auto"`` means),
and its autoencoder against its fit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import torch

from ..devices import resolve_device
from ..exceptions import IncompatibleAutoencoderError
from ..gaussian import STOCHASTIC_MODES
from ..transport import FOLD_WINDOWS, INTERPOLATIONS
from ..validation import check_bool, check_choice, check_int, check_real
from ._common import check_alpha, check_rtol

AUTO_PATCH_MIN_CHANNELS = 16
"""From this many latent channels on (TAEF2's 32), ``patch_size="auto"`` is 1."""

AUTO_RTOL = 0.05
"""What ``rtol="auto"`` is with patches of one latent pixel."""


def check_params(operator: Any) -> None:
    """Raise on the first parameter of ``operator`` that is not valid, naming it."""
    check_alpha(operator.alpha)
    check_choice(operator.stochastic, "stochastic", STOCHASTIC_MODES)
    _check_auto_or(operator.rtol, "rtol", "None, a number in [0, 1)", lambda v, _: check_rtol(v))
    _check_auto_or(operator.patch_size, "patch_size", "an int >= 1", check_int)
    check_int(operator.batch_size, "batch_size")
    check_int(operator.patch_chunk_size, "patch_chunk_size")
    resolve_device(operator.device)
    check_choice(operator.fold_window, "fold_window", FOLD_WINDOWS)
    check_choice(operator.interpolation, "interpolation", INTERPOLATIONS)
    if operator.low_frequency_sigma is not None:
        check_real(operator.low_frequency_sigma, "low_frequency_sigma", low=0, closed="neither")
    _check_auto_or(operator.noise_scale, "noise_scale", "a number in [0, 1]", _check_fraction)
    for name in ("sample_latent", "verbose", "residual", "zero_shot"):
        check_bool(getattr(operator, name), name)
    _check_auto_or(operator.prior_scale, "prior_scale", "an int >= 1", check_int)


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


def _check_auto_or(value: Any, name: str, expected: str, check: Callable) -> None:
    """Raise unless ``value`` is ``"auto"`` or passes ``check(value, name)``."""
    if _is_auto(value):
        return
    if isinstance(value, str):
        raise ValueError(f"{name} must be {expected} or 'auto', got {value!r}")
    check(value, name)


def resolve_patch_size(patch_size: Any, latent_channels: int) -> int:
    """The patch side ``patch_size`` means for latents of ``latent_channels`` channels.

    ``"auto"`` is 1 for rich latents (TAEF2's 32 channels: single latent pixels already
    carry 32 statistics, and in the quality benchmark patch size 1 lost less PSNR and left
    fewer artifacts than 3) and 3 below (the paper's, for the SD VAE's 4 channels, whose
    single pixels carry too little).
    """
    if _is_auto(patch_size):
        return 1 if latent_channels >= AUTO_PATCH_MIN_CHANNELS else 3
    return check_int(patch_size, "patch_size")


def resolve_rtol(rtol: Any, patch_size: int | None) -> float | None:
    """The eigenvalue tolerance ``rtol`` means for patches of side ``patch_size``.

    ``"auto"`` is :data:`AUTO_RTOL` for single-pixel patches (``patch_size_ == 1``, what
    ``"auto"`` gives TAEF2): the directions in which the restored latents vary less than
    that fraction of their largest variance are left out of the map (the stochastic map,
    its noise scaled by ``noise_scale``) instead of amplifying what little the restorer left
    there; in the quality benchmark that removed the stair-stepped edges of super-resolution.
    For larger patches (and before a fit, ``None``) it is None, the paper's plain map: the
    fold averages the noise of overlapping patches, which would take most of its variance
    away.
    """
    if _is_auto(rtol):
        return AUTO_RTOL if patch_size == 1 else None
    return check_rtol(rtol)


def _check_fraction(value: Any, name: str) -> float:
    return check_real(value, name, low=0, high=1)


def resolve_noise_scale(noise_scale: Any, patch_size: int | None) -> float:
    """The fraction of the stochastic map's noise ``noise_scale`` means for patches of side
    ``patch_size``.

    ``"auto"`` is 0 for single-pixel patches, whose weak directions ``rtol="auto"`` cuts: the
    noise, white from one latent pixel to the next, decodes into rims along edges and
    speckle (the quality benchmark's collages). For larger patches (and before a fit) it is
    1, the paper's stochastic map, which supplies what a singular covariance lacks.
    """
    if _is_auto(noise_scale):
        return 0.0 if patch_size == 1 else 1.0
    return _check_fraction(noise_scale, "noise_scale")


def check_compatible(operator: Any, autoencoder: Any) -> None:
    """Raise unless ``autoencoder`` gives latents like those ``operator`` was fitted on."""
    fitted = (operator.latent_channels_, operator.factor_)
    if (autoencoder.latent_channels, autoencoder.factor) != fitted:
        raise IncompatibleAutoencoderError(
            f"vae: this operator was fitted on latents with {fitted[0]} channels and factor "
            f"{fitted[1]}, but {autoencoder.name} gives {autoencoder.latent_channels} "
            f"channels and factor {autoencoder.factor}; use the autoencoder of the fit, "
            "or refit"
        )
    size = resolve_patch_size(operator.patch_size, operator.latent_channels_)
    if size != operator.patch_size_:
        raise IncompatibleAutoencoderError(
            f"patch_size: this operator was fitted with patches of side {operator.patch_size_}"
            f" (patch vectors of length {operator.patch_dim_}), patch_size="
            f"{operator.patch_size!r} gives {size}; refit"
        )


def check_mergeable(operator: Any, other: Any) -> None:
    """Raise unless two fitted operators were fitted alike (autoencoder, patches)."""
    mine = _fit_signature(operator)
    theirs = _fit_signature(other)
    if mine != theirs:
        raise IncompatibleAutoencoderError(
            "cannot merge operators fitted differently: (vae, patch_size, latent "
            f"channels, factor) are {mine} and {theirs}"
        )


def _fit_signature(operator: Any) -> tuple:
    vae = operator.vae
    if isinstance(vae, str | os.PathLike):
        described = os.fspath(vae)
    else:  # copies of one model (unpickled on workers) are the same autoencoder
        described = f"{type(vae).__name__} with weights {_weights_fingerprint(vae)}"
    return (described, operator.patch_size_, operator.latent_channels_, operator.factor_)


def _weights_fingerprint(vae: Any) -> str:
    """A short hash of the tensors of ``vae`` (an autoencoder instance, or a torch module)
    and of the modules it holds: equal for copies on any device, or in any dtype that holds
    the same values."""
    modules = [("", vae)] if isinstance(vae, torch.nn.Module) else sorted(vars(vae).items())
    digest = hashlib.sha256()
    for prefix, module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for name, tensor in module.state_dict().items():
            values = tensor.detach().to("cpu", torch.float64).contiguous().numpy()
            digest.update(f"{prefix}.{name}{tuple(values.shape)}".encode())
            digest.update(values.tobytes())
    return digest.hexdigest()[:12]
