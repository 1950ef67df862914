"""The checks of a LatentOTTransformer: its parameters, and its autoencoder against its fit."""

from __future__ import annotations

import os
from typing import Any

from ..devices import resolve_device
from ..exceptions import IncompatibleAutoencoderError
from ..gaussian import STOCHASTIC_MODES
from ..patches import patch_dim
from ..transport import FOLD_WINDOWS, INTERPOLATIONS
from ..validation import check_bool, check_choice, check_int
from ._common import check_alpha, check_rtol


def check_params(operator: Any) -> None:
    """Raise on the first parameter of ``operator`` that is not valid, naming it."""
    check_alpha(operator.alpha)
    check_choice(operator.stochastic, "stochastic", STOCHASTIC_MODES)
    check_rtol(operator.rtol)
    check_int(operator.patch_size, "patch_size")
    check_int(operator.batch_size, "batch_size")
    check_int(operator.patch_chunk_size, "patch_chunk_size")
    resolve_device(operator.device)
    check_choice(operator.fold_window, "fold_window", FOLD_WINDOWS)
    check_choice(operator.interpolation, "interpolation", INTERPOLATIONS)
    for name in ("sample_latent", "verbose", "residual", "zero_shot"):
        check_bool(getattr(operator, name), name)
    if not (isinstance(operator.prior_scale, str) and operator.prior_scale == "auto"):
        check_int(operator.prior_scale, "prior_scale")


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
    dim = patch_dim(operator.latent_channels_, operator.patch_size)
    if dim != operator.patch_dim_:
        raise IncompatibleAutoencoderError(
            f"patch_size: this operator was fitted with patch vectors of length "
            f"{operator.patch_dim_}, patch_size={operator.patch_size} gives {dim}; refit"
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
    else:
        described = f"{type(vae).__name__} instance at {id(vae):#x}"
    return (described, operator.patch_size, operator.latent_channels_, operator.factor_)
