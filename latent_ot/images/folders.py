"""Transforming folders of image files: nothing lost, nothing half-written, inputs untouched.

Used by the command line (``latent-ot transform``) and by distributed jobs, where each rank
takes its share of the files (:func:`shard`). Every file is processed on its own: an
unreadable image is reported with its reason and the others go on. Outputs keep the input's
file name and format, are written to a temporary file and renamed into place (an interrupted
run never leaves a partial output; what a killed one left is removed when the next run
starts, see :mod:`latent_ot._atomic`), with the permissions a plain write gives (the umask
applies), and an output path that is one of the inputs is refused before anything is written.

Reading and writing overlap the transform: while the callable works on one file, a worker
thread decodes the next ones (when the callable reads its files through latent-ot) and
another encodes and writes the previous results. The report, its order, and the outputs are
those of reading, transforming and writing each file in turn (``prefetch=0``).
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._atomic import atomic_file, remove_stale_temporaries
from ..validation import check_int
from ._files import is_image_file
from ._photo import metadata_save_options
from ._png16 import png16_bytes
from ._prefetch import PREFETCH_DEPTH, background_threads, files_read_ahead

__all__ = ["FolderReport", "expand_inputs", "save_image_atomically", "shard", "transform_files"]

PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNG files that :func:`transform_files` writes (PIL's default is 6)."""


@dataclass
class FolderReport:
    """What :func:`transform_files` did, file by file.

    Attributes
    ----------
    written : list of Path
        Outputs written.
    skipped : list of Path
        Inputs whose output existed already (with ``skip_existing``).
    failed : list of (Path, str)
        Inputs that could not be processed, with the reason.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by ``inputs``: files, directories (their image files) and glob patterns.

    Order is kept, duplicates dropped; a directory contributes its image files sorted by
    name, a pattern its matches sorted. A name that matches nothing raises
    ``FileNotFoundError``.

    Examples
    --------
    >>> expand_inputs([])
    []
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    files: dict[Path, None] = {}
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if is_image_file(p))
        elif path.exists():
            matches = [path]
        elif glob.has_magic(str(entry)):
            matches = sorted(Path(p) for p in glob.glob(str(entry)) if is_image_file(Path(p)))
        else:
            raise FileNotFoundError(f"no such file or directory: {entry}")
        if not matches:
            raise FileNotFoundError(f"no image files in {entry}")
        files.update(dict.fromkeys(matches))
    return list(files)


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The share of ``items`` of one rank: every ``world_size``-th item from ``rank``.

    Shares of ranks ``0 .. world_size - 1`` are disjoint and cover ``items``.

    Examples
    --------
    >>> shard(list(range(7)), 1, 3)
    [1, 4]
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    return list(items[rank::world_size])


def save_image_atomically(
    image: Image.Image | np.ndarray, path: str | os.PathLike, **save_options: Any
) -> None:
    """Save ``image`` to ``path`` in the format its suffix names, never leaving a partial file.

    The image goes to a temporary file in the same directory, which is then renamed onto
    ``path`` (:func:`latent_ot._atomic.atomic_file`: the umask applies to its permissions);
    on any error the temporary file is removed and ``path`` is left as it was. The ICC
    profile and EXIF data in ``image.info`` are kept in JPEG, PNG, WebP and TIFF files (an
    ``icc_profile`` or ``exif`` option replaces them). A uint16 ``H x W x 3`` or ``x 4``
    array (a 16-bit colour PNG read by :class:`~latent_ot.images.ImageSource`) is written
    as a 16-bit PNG file; ``icc_profile`` and ``exif`` are its only options.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "grey.png"
    >>> save_image_atomically(Image.new("L", (3, 2), 128), path)
    >>> Image.open(path).getpixel((0, 0))
    128
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: cannot tell an image format from the suffix {path.suffix!r}")
    if isinstance(image, np.ndarray):
        data = _sixteen_bit_png(image, path, image_format, save_options)
        with atomic_file(path) as stream:
            stream.write(data)
        return
    options = metadata_save_options(image, image_format) | save_options
    with atomic_file(path) as stream:
        image.save(stream, format=image_format, **options)


def _sixteen_bit_png(
    values: np.ndarray, path: Path, image_format: str, options: dict[str, Any]
) -> bytes:
    if image_format != "PNG" or values.dtype != np.uint16 or values.ndim != 3:
        raise ValueError(
            f"{path}: an array is written only as a 16-bit colour PNG file (uint16, H x W x 3 "
            f"or H x W x 4); got a {values.dtype} array of shape {values.shape} for a "
            f"{image_format} file"
        )
    if values.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: a 16-bit PNG array has 3 or 4 channels, got {values.shape}")
    return png16_bytes(values, icc_profile=options.get("icc_profile"), exif=options.get("exif"))


def transform_files(
    transform: Callable[[Path], Image.Image],
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip_existing: bool = False,
    on_file: Callable[[Path], None] | None = None,
    prefetch: int = PREFETCH_DEPTH,
) -> FolderReport:
    """Apply ``transform`` to image files and save each result under ``output_dir``.

    Parameters
    ----------
    transform : callable
        Maps an input path to a PIL image of the same size (or the uint16 array of a 16-bit
        colour PNG), e.g. a fitted ``LatentOTTransformer().transform``.
    inputs : path, pattern, or iterable of them
        Files, directories and glob patterns (see :func:`expand_inputs`).
    output_dir : path
        Created if missing. Outputs keep their input's file name (and so its format): JPEG
        at quality 95, PNG at zlib level :data:`PNG_COMPRESS_LEVEL`, with the ICC profile
        and EXIF data that ``transform`` put in the image's ``info`` (latent-ot's outputs
        carry their input's). Temporaries that a killed run left for this run's outputs
        are removed first.
    rank, world_size : int, default=0, 1
        Process only this rank's share of the files (see :func:`shard`).
    skip_existing : bool, default=False
        Leave inputs whose output exists alone, to resume an interrupted run; otherwise
        existing outputs are replaced.
    on_file : callable, optional
        Called with each input path once it is done (its output written), in input order (for
        progress bars).
    prefetch : int, default 2
        Files decoded ahead on a worker thread, and results waiting to be written by
        another, at most; 0 reads, transforms and writes each file in turn, on this thread.
        Decoding ahead starts once ``transform`` is seen to read its path through
        :class:`~latent_ot.images.ImageSource` (as ``LatentOTTransformer.transform`` does),
        so that a callable that does not read its files costs no decoding.

    Returns
    -------
    FolderReport

    Raises
    ------
    ValueError
        Before writing anything, if two inputs would write the same output file, or an
        output would overwrite an input.

    Notes
    -----
    With a ``LatentOTTransformer``, run this inside ``operator.reusing_freed_memory()`` (as
    ``latent-ot transform`` does), so that each file's transform reuses the memory the
    previous one freed instead of taking fresh pages from the system.
    """
    prefetch = check_int(prefetch, "prefetch", minimum=0)
    files = expand_inputs(inputs)
    output_dir = Path(output_dir)
    outputs = {path: output_dir / path.name for path in files}
    _check_outputs(outputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    share = shard(files, rank, world_size)
    # This run's own outputs only: ranks sharing the folder never touch each other's files.
    remove_stale_temporaries(output_dir, [outputs[path].name for path in share])
    return _transform_share(transform, share, outputs, skip_existing, on_file, prefetch)


def _transform_share(
    transform: Callable[[Path], Image.Image],
    share: list[Path],
    outputs: dict[Path, Path],
    skip_existing: bool,
    on_file: Callable[[Path], None] | None,
    prefetch: int,
) -> FolderReport:
    """The loop of :func:`transform_files` over this rank's files, reads and writes
    overlapping the transform when ``prefetch`` > 0."""

    def to_do(path: Path) -> bool:
        return not (skip_existing and outputs[path].exists())

    report = FolderReport()
    with ExitStack() as stack:
        # Leaving the block waits for the writes under way: no output is left half-written.
        writer = files_ahead = None
        if prefetch:
            reader = stack.enter_context(background_threads("latent-ot-read"))
            writer = stack.enter_context(background_threads("latent-ot-write"))
            files_ahead = stack.enter_context(files_read_ahead(reader, prefetch))
        reads_files = False  # whether transform reads its path through latent-ot: seen once run
        pending: deque[tuple[Path, _Outcome | Future]] = deque()
        for index, path in enumerate(share):
            if not to_do(path):
                pending.append((path, ("skipped", path)))
            else:
                if reads_files:
                    files_ahead.schedule(
                        [p for p in share[index : index + 1 + prefetch] if to_do(p)]
                    )
                image_or_failure = _transformed(transform, path)
                if files_ahead is not None and not reads_files:
                    reads_files = os.fspath(path) in files_ahead.asked
                pending.append((path, _written(image_or_failure, path, outputs[path], writer)))
            _record(pending, report, on_file, keep=prefetch)
        _record(pending, report, on_file, keep=0)
    return report


# What became of one input: ("written", output path), ("skipped", input path) or
# ("failed", (input path, reason)).
_Outcome = tuple[str, Any]


def _transformed(transform: Callable[[Path], Image.Image], path: Path) -> Image.Image | _Outcome:
    """``transform(path)``, or the failure of a file that it could not process."""
    try:
        return transform(path)
    except (OSError, ValueError, TypeError) as err:
        return "failed", (path, f"{type(err).__name__}: {err}")


def _written(
    image: Image.Image | _Outcome, path: Path, output: Path, writer: ThreadPoolExecutor | None
) -> _Outcome | Future:
    """The outcome of saving ``image`` to ``output``: now, or on ``writer``'s thread."""
    if isinstance(image, tuple):  # the transform failed
        return image
    if writer is None:
        return _save(image, path, output)
    return writer.submit(_save, image, path, output)


def _save(image: Image.Image | np.ndarray, path: Path, output: Path) -> _Outcome:
    try:
        options = _save_options(path)
        if isinstance(image, np.ndarray):  # 16-bit colour: the profile is still the input's
            options = _icc_profile_of(path)
        save_image_atomically(image, output, **options)
    except (OSError, ValueError, TypeError) as err:
        return "failed", (path, f"{type(err).__name__}: {err}")
    return "written", output


def _record(
    pending: deque,
    report: FolderReport,
    on_file: Callable[[Path], None] | None,
    keep: int,
) -> None:
    """Move outcomes from the front of ``pending`` to ``report``, in input order: those done,
    and more, waiting for them, until at most ``keep`` are left."""
    while pending:
        path, outcome = pending[0]
        if isinstance(outcome, Future):
            if len(pending) <= keep and not outcome.done():
                return
            outcome = outcome.result()
        pending.popleft()
        kind, value = outcome
        getattr(report, kind).append(value)
        if on_file is not None:
            on_file(path)


def _check_outputs(outputs: dict[Path, Path]) -> None:
    by_output: dict[Path, Path] = {}
    inputs = {path.resolve() for path in outputs}
    for path, output in outputs.items():
        if output.resolve() in inputs:
            raise ValueError(
                f"output {output} would overwrite an input; choose another output directory"
            )
        if output in by_output:
            raise ValueError(
                f"{by_output[output]} and {path} would both be written to {output}; "
                "transform them into different output directories"
            )
        by_output[output] = path


def _icc_profile_of(path: Path) -> dict[str, Any]:
    with Image.open(path) as opened:  # the header only: a PNG's iCCP comes before its pixels
        profile = opened.info.get("icc_profile")
    return {"icc_profile": profile} if profile else {}


def _save_options(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        # Re-encoding a JPEG at PIL's default quality 75 would add visible artefacts.
        return {"quality": 95}
    if suffix == ".png":
        # zlib's level 1, not PIL's 6: for photos, files hardly larger and written much
        # faster, which keeps writing from slowing a folder run down.
        return {"compress_level": PNG_COMPRESS_LEVEL}
    return {}
