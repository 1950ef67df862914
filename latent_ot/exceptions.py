"""Exceptions raised by latent-ot.

The public API raises ``ValueError`` (bad values: shapes, ranges, NaN, empty sets, files that
are not images or operators), ``TypeError`` (objects of the wrong kind), ``FileNotFoundError``
(missing files), :class:`NotFittedError` (use before ``fit``) and the classes below, each
with a message that names the argument at fault. Every class here derives from a builtin
exception, so ``except ValueError`` keeps working.
"""

from sklearn.exceptions import NotFittedError

__all__ = [
    "AutoencoderNotFoundError",
    "ImageReadError",
    "IncompatibleAutoencoderError",
    "NotFittedError",
    "OperatorFileError",
]


class ImageReadError(ValueError):
    """A file or object given as an image could not be read as one."""


class AutoencoderNotFoundError(OSError):
    """An autoencoder could not be found locally nor downloaded."""


class IncompatibleAutoencoderError(ValueError):
    """A fitted operator is used with an autoencoder whose latents do not match the fit."""


class OperatorFileError(ValueError):
    """A file is not a readable latent-ot operator: foreign, truncated, tampered or too new."""
