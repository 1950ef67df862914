"""latent-ot: Deep Optimal Transport for photo-realistic image restoration.

Encode images with a pretrained autoencoder, fit Gaussian statistics of overlapping latent
patches of restored and of natural images, and apply the closed-form Gaussian optimal
transport map to the patches of new restored images (Adrai et al., NeurIPS 2023).
"""

from .estimators import GaussianOTTransformer, LatentOTTransformer
from .stats import GaussianStats

__version__ = "0.1.0.dev0"

__all__ = ["GaussianOTTransformer", "GaussianStats", "LatentOTTransformer", "__version__"]
