"""Image files decoded ahead on a worker thread while the autoencoder computes.

PIL decodes PNG and JPEG files in C code that releases the GIL, and torch releases it in its
operators, so a worker thread can decode the next files while the main thread encodes the
current ones. Two readers use this module:

- :class:`~latent_ot.images.ImageSource`, when it iterates over a directory or a list,
  decodes the files among its elements ahead with :func:`read_ahead` (``fit`` and
  ``transform`` on folders and lists of files);
- :func:`~latent_ot.images.folders.transform_files`, which hands its callable one path at a
  time, decodes the next paths ahead within :func:`files_read_ahead`; the reading of a path
  that the callable starts (through :class:`~latent_ot.images.ImageSource`) then takes the
  decoded image with :func:`take_prefetched` instead of reading the file again.

The worker threads run at the lowest CPU priority (:func:`background_threads`): on a CPU
whose cores all run the autoencoder's threads, a worker at the same priority would take a core
from one of them, and the others would wait for it at every layer; at the lowest priority it
runs in the gaps, and where its result is awaited, the cores are free for it anyway.

Only the decoding runs ahead; turning the image into float pixels stays in the calling thread
(torch operators started from a second thread would start a second pool of threads). What is
decoded ahead is bounded (:data:`PREFETCH_DEPTH` images), results come in the order of the
inputs, and a file that cannot be decoded ahead is read again by the calling thread when it is
reached, so that its error is the one, naming the file, that reading it in turn gives.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from ._files import decode
from ._png16 import SixteenBitColour

__all__ = [
    "PREFETCH_DEPTH",
    "background_threads",
    "files_read_ahead",
    "read_ahead",
    "take_prefetched",
]

T = TypeVar("T")

PREFETCH_DEPTH = 2
"""Files decoded ahead of the one in use, at most (and, in
:func:`~latent_ot.images.folders.transform_files`, results waiting to be written): enough to
hide a decode behind an autoencoder pass, few enough that the decoded images waiting take
little memory."""


def background_threads(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads named ``name``, each at the lowest CPU priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_lowest_priority)


def _lowest_priority() -> None:
    # On Linux a thread has its own nice value: raising it (lowering the priority) needs no
    # privilege and touches neither the process nor its other threads. Elsewhere, nothing.
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


def is_file(element: Any) -> bool:
    """Whether an element of an image source is a path to a file (read from disk)."""
    return isinstance(element, (str, os.PathLike))


def decode_file(path: str | os.PathLike) -> Image.Image | SixteenBitColour | None:
    """The decoded image of ``path``, or None where the main thread must read it itself.

    Safe on a worker thread: it changes no warning filter (``warnings.catch_warnings`` is
    process-wide). Files it cannot read, and files over PIL's pixel limit, which
    :func:`~latent_ot.images._files.read_image_file` refuses, give None: the main thread then
    reads them in turn and raises the error that names them.
    """
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                return None
            return decode(Path(path), opened, os.fspath(path))
    except Exception:  # the main thread's reading reports it, with the file's name
        return None


def read_ahead(
    pairs: Iterable[tuple[str, Any]],
    read: Callable[[Any, str, Image.Image | None], T],
    depth: int = PREFETCH_DEPTH,
) -> Iterator[T]:
    """``read(element, name, decoded)`` of each ``(name, element)`` pair, in order.

    Elements that are paths (:func:`is_file`) are decoded (:func:`decode_file`) on a worker
    thread up to ``depth`` pairs ahead of the one in use; ``read`` runs in the calling thread
    when the element is reached, with the decoded image, or None for other elements and for
    files that could not be decoded ahead. ``pairs`` is consumed ``depth`` pairs ahead of what
    has been yielded; closing the iterator cancels the decoding not started and waits for the
    one running.
    """
    pairs = iter(pairs)
    pending: deque[tuple[str, Any, Future | None]] = deque()
    with background_threads("latent-ot-read") as pool:
        try:
            while True:
                for name, element in pairs:
                    ahead = pool.submit(decode_file, element) if is_file(element) else None
                    pending.append((name, element, ahead))
                    if len(pending) > depth:
                        break
                if not pending:
                    return
                name, element, ahead = pending.popleft()
                yield read(element, name, None if ahead is None else ahead.result())
        finally:
            for _, _, ahead in pending:
                if ahead is not None:
                    ahead.cancel()


class _FilesAhead:
    """The paths decoded ahead for :func:`files_read_ahead`, and which ones were asked for."""

    def __init__(self, pool: ThreadPoolExecutor, depth: int) -> None:
        self.pool, self.depth = pool, depth
        self.decoding: dict[str, Future] = {}
        self.asked: set[str] = set()

    def schedule(self, paths: Sequence[Path]) -> None:
        """Decode the path in use and the next ones, the first ``paths`` (at most ``1 +
        depth``), forgetting what was decoded for paths not among them."""
        wanted = [os.fspath(path) for path in paths[: 1 + self.depth]]
        for key in set(self.decoding) - set(wanted):
            self.decoding.pop(key).cancel()
        for key in wanted:
            if key not in self.decoding:
                self.decoding[key] = self.pool.submit(decode_file, key)

    def take(self, path: str | os.PathLike) -> Image.Image | None:
        key = os.fspath(path)
        self.asked.add(key)
        ahead = self.decoding.pop(key, None)
        return None if ahead is None else ahead.result()


_files_ahead: ContextVar[_FilesAhead | None] = ContextVar("latent_ot_files_ahead", default=None)


@contextmanager
def files_read_ahead(
    pool: ThreadPoolExecutor, depth: int = PREFETCH_DEPTH
) -> Iterator[_FilesAhead]:
    """Within the block, in this thread, files scheduled on the yielded object are decoded
    ahead on ``pool``, and reading one of them takes its decoded image (:func:`take_prefetched`).
    """
    files = _FilesAhead(pool, depth)
    token = _files_ahead.set(files)
    try:
        yield files
    finally:
        _files_ahead.reset(token)
        files.schedule([])  # cancels what was not started


def take_prefetched(path: str | os.PathLike) -> Image.Image | None:
    """The image decoded ahead for ``path`` in this thread's :func:`files_read_ahead` block,
    if any (a copy of what reading the file gives); None otherwise: read the file."""
    files = _files_ahead.get()
    return None if files is None else files.take(path)
