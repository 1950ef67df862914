"""What a GaussianOTTransformer file holds: its statistics and its Gaussian map."""

from __future__ import annotations

from typing import Any

from ..gaussian import GaussianMap
from ._common import stats_from, stats_tensors


def transport_file_state(estimator: Any, prefix: str = "") -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a fitted GaussianOTTransformer, names led by ``prefix``."""
    tensors = stats_tensors(f"{prefix}source", estimator.source_stats_)
    counts = {"source": estimator.source_stats_.count}
    if estimator.target_stats_ is not None:
        tensors |= stats_tensors(f"{prefix}target", estimator.target_stats_)
        counts["target"] = estimator.target_stats_.count
    ot_map = estimator._gaussian_map
    tensors[f"{prefix}map.mean_source"] = ot_map.mean_source
    tensors[f"{prefix}map.mean_target"] = ot_map.mean_target
    tensors[f"{prefix}map.matrix"] = ot_map.matrix
    if ot_map.noise_factor is not None:
        tensors[f"{prefix}map.noise_factor"] = ot_map.noise_factor
    metadata = {"counts": counts, "n_features_in": estimator.n_features_in_, "w2": estimator.w2_}
    return tensors, metadata


def restore_transport(estimator: Any, tensors: dict, metadata: dict, prefix: str = "") -> None:
    """Set the fitted state of a GaussianOTTransformer from :func:`transport_file_state`'s
    output, read back from a file."""
    counts = metadata["counts"]
    estimator.n_features_in_ = metadata["n_features_in"]
    estimator.source_stats_ = stats_from(tensors, f"{prefix}source", counts["source"])
    estimator.target_stats_ = None
    if "target" in counts:
        estimator.target_stats_ = stats_from(tensors, f"{prefix}target", counts["target"])
    ot_map = GaussianMap(
        tensors[f"{prefix}map.mean_source"],
        tensors[f"{prefix}map.mean_target"],
        tensors[f"{prefix}map.matrix"],
        tensors.get(f"{prefix}map.noise_factor"),
    )
    estimator._set_map(ot_map, metadata["w2"])
