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
    "MetricSkippedWarning",
    "NotFittedError",
    "OperatorFileError",
    "first_line",
]


class ImageReadError(ValueError):
    """A file or object given as an image could not be read as one."""


class AutoencoderNotFoundError(OSError):
    """An autoencoder could not be found locally nor downloaded."""


class IncompatibleAutoencoderError(ValueError):
    """A fitted operator is used with an autoencoder whose latents do not match the fit."""


class OperatorFileError(ValueError):
    """A file is not a readable latent-ot operator: foreign, truncated, tampered or too new."""


class FitWarning(UserWarning):
    """An operator is fitted, or used, where its statistics are unlikely to hold: too few
    patch vectors for their dimension, or images far from the size of the fit."""


class MetricSkippedWarning(UserWarning):
    """A metric was left out of an evaluation: what it needs is missing here.

    Attributes
    ----------
    metric : str
        The metric's name, as in :data:`latent_ot.metrics.METRICS`.
    reason : str
        Why it could not be computed (one line: the missing package or network).
    remedy : str
        What to install or pass to get it.
    """

    def __init__(self, metric: str, reason: str, remedy: str = "") -> None:
        self.metric = metric
        self.reason = reason
        self.remedy = remedy
        text = f"{metric} skipped: {reason}"
        super().__init__(f"{text}; {remedy}" if remedy else text)


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (or of a text), for one-line reports.

    Examples
    --------
    >>> first_line(ValueError("not an image\\n  at line 3"))
    'not an image'
    """
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
