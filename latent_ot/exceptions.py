"""Exceptions raised by latent-ot, beyond the builtin ``ValueError`` and ``TypeError``.

Every class here derives from a builtin exception, so ``except ValueError`` keeps working.
"""

from sklearn.exceptions import NotFittedError

__all__ = [
    "AutoencoderNotFoundError",
    "ImageReadError",
    "IncompatibleAutoencoderError",
    "NotFittedError",
]


class ImageReadError(ValueError):
    """A file or object given as an image could not be read as one."""


class AutoencoderNotFoundError(OSError):
    """An autoencoder could not be found locally nor downloaded."""


class IncompatibleAutoencoderError(ValueError):
    """A fitted operator is used with an autoencoder whose latents do not match the fit."""
