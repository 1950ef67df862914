"""What a LatentOTTransformer file holds: its statistics, its Gaussian map and its parameters."""

from __future__ import annotations

import math
from typing import Any

from ._common import json_params, stats_from, stats_tensors

_TRANSPORT = "transport."

PARAMS_ADDED_LATER = {"low_frequency_sigma": None, "noise_scale": 1.0}
"""Parameters added after operator files and pickles existed, with the value that gives an
older operator its old outputs."""


def operator_file_state(operator: Any) -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a fitted LatentOTTransformer, for a safe operator file."""
    tensors = stats_tensors("restored", operator.restored_stats_)
    tensors |= stats_tensors("natural", operator.natural_stats_)
    transport_tensors, transport_metadata = operator.gaussian_ot_.file_state(_TRANSPORT)
    metadata = {
        "kind": type(operator).__name__,
        "params": json_params(operator.get_params()),
        "counts": {
            "restored": operator.restored_stats_.count,
            "natural": operator.natural_stats_.count,
            "restored_images": operator.n_images_restored_,
            "natural_images": operator.n_images_natural_,
        },
        "latent_channels": operator.latent_channels_,
        "factor": operator.factor_,
        "patch_dim": operator.patch_dim_,
        "prior_scale": operator.prior_scale_,
        "transport": transport_metadata,
    }
    return tensors | transport_tensors, metadata


def restore_operator(operator: Any, tensors: dict, metadata: dict) -> Any:
    """Set the fitted state of a new LatentOTTransformer from an operator file's contents."""
    counts = metadata["counts"]
    operator.latent_channels_ = metadata["latent_channels"]
    operator.factor_ = metadata["factor"]
    operator.patch_dim_ = metadata["patch_dim"]
    operator.patch_size_ = fitted_patch_size(operator.patch_dim_, operator.latent_channels_)
    operator.restored_stats_ = stats_from(tensors, "restored", counts["restored"])
    operator.natural_stats_ = stats_from(tensors, "natural", counts["natural"])
    operator.n_images_restored_ = counts["restored_images"]
    operator.n_images_natural_ = counts["natural_images"]
    operator.prior_scale_ = metadata.get("prior_scale")  # absent from files before priors
    operator.gaussian_ot_ = operator._gaussian_transport()
    operator.gaussian_ot_.restore_file_state(tensors, metadata["transport"], _TRANSPORT)
    operator.w2_ = operator.gaussian_ot_.w2_
    return operator


def fitted_patch_size(patch_dim: int, latent_channels: int) -> int:
    """The patch side of patch vectors of length ``patch_dim = latent_channels * side ** 2``."""
    return math.isqrt(patch_dim // latent_channels)
