"""latent-ot: Deep Optimal Transport for photo-realistic image restoration.

Encode images with a pretrained autoencoder, fit Gaussian statistics of overlapping latent
patches of restored and of natural images, and apply the closed-form Gaussian optimal
transport map to the patches of new restored images (Adrai et al., NeurIPS 2023).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy attributes below resolve to, for type checkers and editors
    from .estimators import GaussianOTTransformer, LatentOTTransformer
    from .stats import GaussianStats

__version__ = "0.1.0.dev0"

__all__ = ["GaussianOTTransformer", "GaussianStats", "LatentOTTransformer", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the command line can catch Ctrl-C while torch imports.
    if name in ("GaussianOTTransformer", "LatentOTTransformer"):
        from . import estimators

        return getattr(estimators, name)
    if name == "GaussianStats":
        from .stats import GaussianStats

        return GaussianStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
