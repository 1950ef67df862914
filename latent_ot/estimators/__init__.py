"""The scikit-learn estimators: they compose the pieces and hold no math of their own.

- :class:`GaussianOTTransformer` transports 2-D samples (rows) between two Gaussians.
- :class:`LatentOTTransformer` does it on overlapping latent patches of images.
"""

from .gaussian_transport import GaussianOTTransformer
from .latent_transport import LatentOTTransformer

__all__ = ["GaussianOTTransformer", "LatentOTTransformer"]
