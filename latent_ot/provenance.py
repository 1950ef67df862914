"""Where a file comes from: the file its author published, and the autoencoder behind it.

Two checks that the checksums inside an operator or prior file cannot make, since anyone who
rewrites a file recomputes them:

- **Pinning.** :func:`file_sha256` gives the sha256 of a file's bytes, for its author to
  publish beside it; ``read_operator(path, sha256=...)``, ``NaturalPrior.load(path,
  sha256=...)`` and the CLI's ``--sha256`` refuse any other file, the way pip's
  hash-checking mode and ``torch.hub``'s ``check_hash`` do.
- **The autoencoder.** Statistics of latents mean something only for the autoencoder that
  encoded them: another one with the same number of channels gives latents of another
  distribution. Files record :func:`autoencoder_provenance` (the autoencoder's name and the
  sha256 of its weights, :meth:`Autoencoder.fingerprint
  <latent_ot.autoencoders.Autoencoder.fingerprint>`), and :func:`check_same_autoencoder`
  refuses another one unless the caller overrides it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from .exceptions import IncompatibleAutoencoderError

__all__ = [
    "autoencoder_provenance",
    "check_same_autoencoder",
    "check_sha256",
    "file_sha256",
]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as 64 lowercase hexadecimal digits (as ``sha256sum``).

    What to publish beside a shared operator or prior file, for ``sha256=`` to check.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "empty")
    >>> open(path, "wb").close()
    >>> file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(sha256: Any, name: str = "sha256") -> str:
    """``sha256`` as 64 lowercase hex digits; a ``"sha256:"`` prefix (pip's form) is dropped.

    Examples
    --------
    >>> check_sha256("sha256:" + "AB" * 32) == "ab" * 32
    True
    """
    text = sha256.strip().lower().removeprefix("sha256:") if isinstance(sha256, str) else None
    if text is None or len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{name} must be 64 hexadecimal digits (a sha256), got {sha256!r}")
    return text


def autoencoder_provenance(autoencoder: Any) -> dict[str, str]:
    """What a file records of the autoencoder behind it: its name and weights' fingerprint.

    The name leaves out where the weights were loaded from (``"taef2 (/some/dir)"`` is
    ``"taef2"``): any copy of the same weights is the same autoencoder.

    Examples
    --------
    >>> from latent_ot.autoencoders import PixelAutoencoder
    >>> sorted(autoencoder_provenance(PixelAutoencoder()))
    ['fingerprint', 'name']
    """
    return {"name": autoencoder.name.split(" (")[0], "fingerprint": autoencoder.fingerprint()}


def check_same_autoencoder(
    recorded: dict[str, Any] | None, autoencoder: Any, *, what: str, override: str
) -> None:
    """Raise unless ``autoencoder`` has the fingerprint ``recorded`` (a file's provenance).

    Parameters
    ----------
    recorded : dict or None
        :func:`autoencoder_provenance` as the file recorded it; None (a file that records
        none, or whose check the caller declined) passes.
    autoencoder : Autoencoder
        The one about to be used with the file's statistics.
    what : str
        What the file is, for the message (e.g. ``"prior 'p.safetensors'"``).
    override : str
        How the caller declines the check, for the message (e.g. ``"check_autoencoder=False"``).

    Raises
    ------
    IncompatibleAutoencoderError
        Naming both autoencoders and their fingerprints.

    Examples
    --------
    >>> from latent_ot.autoencoders import PixelAutoencoder
    >>> pixel = PixelAutoencoder()
    >>> check_same_autoencoder(autoencoder_provenance(pixel), pixel, what="a file", override="")
    """
    if recorded is None:
        return
    fingerprint = autoencoder.fingerprint()
    if recorded["fingerprint"] != fingerprint:
        raise IncompatibleAutoencoderError(
            f"{what} was made with the autoencoder {recorded['name']} (weights "
            f"{recorded['fingerprint'][:12]}), not with {autoencoder.name} (weights "
            f"{fingerprint[:12]}): its statistics describe another autoencoder's latents. Use "
            f"the autoencoder it was made with, or pass {override} if you know they match"
        )
