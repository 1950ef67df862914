"""Transforming folders of image files, under the import path this module has always had.

Everything here is re-exported unchanged from :mod:`latent_ot.images.folders`, where it is
documented: :func:`~latent_ot.images.folders.transform_files` and its
:class:`~latent_ot.images.folders.FolderReport`,
:func:`~latent_ot.images.folders.expand_inputs`, :func:`~latent_ot.images.folders.shard` and
:func:`~latent_ot.images.folders.save_image_atomically`.

Examples
--------
>>> import latent_ot.images.folders
>>> shard is latent_ot.images.folders.shard
True
"""

from __future__ import annotations

from .images.folders import (
    FolderReport,
    expand_inputs,
    save_image_atomically,
    shard,
    transform_files,
)

__all__ = ["FolderReport", "expand_inputs", "save_image_atomically", "shard", "transform_files"]
