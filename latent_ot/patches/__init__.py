"""Overlapping latent patches: extraction, chunked iteration and folding back.

Pure tensor geometry: a latent batch ``N x C x h x w`` is cut into every overlapping
``C x p x p`` patch (stride 1), each flattened to a vector of length ``d = C * p * p``.

Vector layout
-------------
A patch vector follows :func:`torch.nn.functional.unfold`: channel-major, then patch row,
then patch column, i.e. element ``c * p * p + i * p + j`` is channel ``c`` at row ``i`` and
column ``j`` of the patch. Covariances fitted on these vectors depend on this layout, so
every function here uses it.

Row order
---------
Patch matrices list patches image by image and, within an image, in raster order of the
patch's top-left corner.
"""

from ._extract import extract_patches, iter_patch_chunks, patch_dim
from ._fold import fold_patches, gaussian_window
from ._map import map_patches

__all__ = [
    "extract_patches",
    "fold_patches",
    "gaussian_window",
    "iter_patch_chunks",
    "map_patches",
    "patch_dim",
]
