"""Named recipes of :class:`~latent_ot.LatentOTTransformer`, and what its ``"auto"`` values mean.

Two recipes:

- :data:`DEFAULT`, what ``LatentOTTransformer()`` does: TAEF2 (bundled, offline) with its
  built-in natural prior, interpolation in latent space and the input's low frequencies kept;
- :data:`PAPER` with :data:`PAPER_MAP`, the paper's recipe (Adrai et al., NeurIPS 2023), which
  :meth:`LatentOTTransformer.paper() <latent_ot.LatentOTTransformer.paper>` builds: the Stable
  Diffusion VAE, patches of side 3, the plain Gaussian map, interpolation between images.

And the rules ``"auto"`` follows, each with its reason: :func:`auto_patch_size` (the patch side
for an autoencoder's latent channels) and :func:`auto_map` (the Gaussian map's settings for a
patch side).

Examples
--------
>>> auto_patch_size(32), auto_patch_size(4)
(1, 3)
>>> auto_map(1)["rtol"], auto_map(3)["rtol"]
(0.05, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "AUTO_PATCH_MIN_CHANNELS",
    "AUTO_RTOL",
    "DEFAULT",
    "PAPER",
    "PAPER_MAP",
    "auto_map",
    "auto_patch_size",
]

DEFAULT: Mapping[str, Any] = MappingProxyType(
    {
        "vae": "taef2",
        "prior": "builtin",
        "patch_size": "auto",
        "alpha": 0.25,
        "low_frequency_sigma": 6.0,
        "interpolation": "latent",
        "shifts": 1,
        "transport": None,
    }
)
"""The defaults of ``LatentOTTransformer()``.

- ``vae="taef2"``: the autoencoder that ships with the package, so a first fit needs no
  download, and one whose 32 latent channels carry enough per latent pixel for patches of
  side 1;
- ``prior="builtin"``: without natural images, the natural side is TAEF2's built-in prior;
- ``interpolation="latent"``: ``alpha`` mixes latents, then decodes, which keeps every
  intermediate output on the autoencoder's image manifold instead of superposing two images;
- ``low_frequency_sigma=6.0``: restorers get an image's coarse content (colour, shading) right
  far more often than its fine detail, so the transport is only let change the detail;
- ``alpha=0.25``: a quarter of the way back to the input. Chosen on the quality benchmark's
  validation split (:doc:`/quality`): against ``alpha=0`` it keeps more of the restorer's
  fidelity on every task and looks as natural or more on most, fidelity-trained networks
  included, and it weakens the faint latent-grid pattern a small decoder can leave;
- ``shifts=1``: no cycle spinning. More shifts weaken the grid pattern further, but each
  costs a whole transform and, at the default ``alpha``, they gave back part of the realism
  gain on most tasks (:ref:`choosing-shifts`);
- ``transport=None``: the Gaussian map :func:`auto_map` gives for the patch side.
"""

PAPER: Mapping[str, Any] = MappingProxyType(
    {
        "vae": "sd-vae-ft-mse",
        "patch_size": 3,
        "alpha": 0.0,
        "interpolation": "pixel",
        "low_frequency_sigma": None,
        "shifts": 1,
    }
)
"""The paper's parameters of ``LatentOTTransformer`` (its map: :data:`PAPER_MAP`)."""

PAPER_MAP: Mapping[str, Any] = MappingProxyType(
    {"stochastic": "auto", "rtol": None, "noise_scale": 1.0}
)
"""The paper's Gaussian map: deterministic unless the restored covariance is singular (to the
precision of float64), then stochastic with all of its noise."""

AUTO_PATCH_MIN_CHANNELS = 16
"""From this many latent channels on (TAEF2 has 32), ``patch_size="auto"`` is 1."""

AUTO_RTOL = 0.05
"""The eigenvalue tolerance of the map for patches of one latent pixel (:func:`auto_map`)."""


def auto_patch_size(latent_channels: int) -> int:
    """The patch side ``patch_size="auto"`` gives latents of ``latent_channels`` channels.

    1 for rich latents (16 channels or more): one latent pixel already carries that many
    statistics, and larger patches mostly add the correlations of neighbouring pixels, which
    the transport then gets wrong as seams and ringing. 3 below (the paper's, for the Stable
    Diffusion VAE's 4 channels), whose single pixels carry too little.

    Examples
    --------
    >>> auto_patch_size(3)
    3
    """
    return 1 if latent_channels >= AUTO_PATCH_MIN_CHANNELS else 3


def auto_map(patch_size: int) -> dict[str, Any]:
    """The settings of the Gaussian map (:class:`~latent_ot.GaussianOTTransformer`) that
    ``transport=None`` gives patches of side ``patch_size``.

    For single-pixel patches, ``rtol=0.05`` and ``noise_scale=0``: the directions in which the
    restored latents vary less than 5 % of their largest variance are what a restorer lost, and
    the plain map would amplify whatever little is left there into stair-stepped edges; they
    are left at the natural mean instead, and without noise, which, white from one latent pixel
    to the next, would decode into rims and speckle. For larger patches, the paper's map
    (:data:`PAPER_MAP`): overlapping patches are averaged when folded, which tames the
    amplification and would average the noise away.

    Examples
    --------
    >>> auto_map(1)
    {'stochastic': 'auto', 'rtol': 0.05, 'noise_scale': 0.0}
    """
    if patch_size == 1:
        return {"stochastic": "auto", "rtol": AUTO_RTOL, "noise_scale": 0.0}
    return dict(PAPER_MAP)
