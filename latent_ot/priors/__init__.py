"""Natural-image priors: patch statistics of natural photos, so that ``fit`` needs no photos.

The paper finds that the content of the natural images hardly matters (section 6: photos of
cars improve restored dogs) and that their resolution does. A :class:`NaturalPrior` holds the
latent patch statistics of many natural photos for one autoencoder, at a few image scales, and
:class:`~latent_ot.LatentOTTransformer` uses the scale nearest to the size of the restored
images when ``fit(restored)`` is called without natural images.

The bundled autoencoder (preset ``"taef2"``) comes with a built-in prior
(:func:`builtin_prior`), built by ``scripts/build_prior.py`` from photos that are not part of
the package; :func:`build_prior` (or ``latent-ot prior``) builds one for any autoencoder from
your own photos.

Examples
--------
>>> prior = builtin_prior("taef2")
>>> prior.autoencoder, prior.latent_channels, prior.patch_sizes
('taef2', 32, (1, 2, 3))
"""

from ._build import build_prior, resize_long_side
from ._prior import (
    BUILTIN_PRIORS,
    NaturalPrior,
    builtin_prior,
    has_builtin_prior,
    load_prior,
    restored_image_side,
)

__all__ = [
    "BUILTIN_PRIORS",
    "NaturalPrior",
    "build_prior",
    "builtin_prior",
    "has_builtin_prior",
    "load_prior",
    "resize_long_side",
    "restored_image_side",
]
