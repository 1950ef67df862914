"""Files written whole or not at all, with the permissions a plain write would give them.

A file is written to a temporary file beside its target, ``.NAME.latent-ot-XXXXXXXXXXXXXXXX.tmp``
(16 hexadecimal digits), then renamed onto the target: the rename is atomic on one file system,
so a reader sees the old file or the new one, never half of it. Any error, an interrupt
included, removes the temporary file. A process killed outright (SIGKILL, power loss) cannot,
and :func:`remove_stale_temporaries` clears what such a run left before the next one starts.

The temporary file is created with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, not
:func:`tempfile.mkstemp`, whose files are private (mode 0600): the kernel applies the process's
umask (and a directory's default ACL) exactly as it does for ``open(path, "w")``, without
reading the umask, which only setting it can do and which is not thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "remove_stale_temporaries", "temporary_path"]

_MARK = "latent-ot"
# tempfile.mkstemp's 8 characters: the naming of the temporaries of latent-ot <= 0.x images.
_TOKEN = re.compile(rf"(?:{_MARK}-[0-9a-f]{{16}}|[a-z0-9_]{{8}})")


def temporary_path(target: Path) -> Path:
    """A fresh temporary name beside ``target``, in the naming this module cleans up."""
    return target.with_name(f".{target.name}.{_MARK}-{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose contents replace ``target`` when the block ends without error.

    The data are flushed to disk (fsync) before the rename, and the folder after it, so
    that the rename itself survives a power loss. On any error, or an interrupt, the
    temporary file is removed and ``target`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "notes.txt") as stream:
    ...     _ = stream.write(b"whole")
    >>> (folder / "notes.txt").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'whole', ['notes.txt'])
    """
    target = Path(target)
    temporary = temporary_path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with open(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:  # KeyboardInterrupt too: never leave a partial file behind
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable on POSIX. Best effort: the new file is already in place, and
    # some systems (Windows, some network file systems) cannot sync a directory.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove the temporaries an interrupted run left for the files ``names`` of ``directory``.

    Only files named as :func:`atomic_file` names them for one of ``names`` are removed
    (``.photo.png.latent-ot-0123456789abcdef.tmp`` for ``photo.png``, and the
    ``.photo.png.k2j4_x9q.tmp`` of earlier versions): never another program's files. Call it
    with the outputs of this run only, so that runs sharing a folder (ranks of a sharded job,
    each with its own files) never remove each other's temporaries.

    Returns
    -------
    list of Path
        The files removed.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / ".a.png.latent-ot-0123456789abcdef.tmp").write_bytes(b"partial")
    >>> _ = (folder / ".b.png.latent-ot-0123456789abcdef.tmp").write_bytes(b"not ours")
    >>> [path.name for path in remove_stale_temporaries(folder, ["a.png"])]
    ['.a.png.latent-ot-0123456789abcdef.tmp']
    """
    directory = Path(directory)
    wanted = set(names)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            name = _temporary_of(path.name)
            if name in wanted and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def _temporary_of(file_name: str) -> str | None:
    """``photo.png`` for ``.photo.png.<token>.tmp``; None for any other name."""
    if not (file_name.startswith(".") and file_name.endswith(".tmp")):
        return None
    stem, _, token = file_name[1 : -len(".tmp")].rpartition(".")
    return stem if stem and _TOKEN.fullmatch(token) else None
