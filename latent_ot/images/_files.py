"""Image files: which files are images, reading one safely, listing a directory's."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from ..exceptions import ImageReadError
from ._photo import check_single_frame
from ._png16 import SixteenBitColour, read_sixteen_bit_colour

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with an image extension (any case)."""
    return (
        path.suffix.lower() in IMAGE_EXTENSIONS
        and not path.name.startswith(".")  # such as macOS's "._photo.png" metadata files
        and path.is_file()
    )


def image_files_in(directory: Path, name: str) -> list[Path]:
    """The image files of ``directory``, sorted by name; refuses a directory without any."""
    files = sorted(
        (path for path in directory.iterdir() if is_image_file(path)), key=lambda path: path.name
    )
    if not files:
        extensions = ", ".join(sorted(extension[1:] for extension in IMAGE_EXTENSIONS))
        raise ValueError(
            f"{name}: {directory} contains no image files (by extension: {extensions})"
        )
    return files


def read_image_file(path: Path, name: str) -> Image.Image | SixteenBitColour:
    """The decoded image of the file ``path``, detached from the file; refuses a file of
    several frames."""
    if path.is_dir():
        raise ImageReadError(
            f"{name} is a directory; a directory is accepted only as the whole argument"
        )
    if not path.exists():
        raise file_not_found(path, name)
    try:
        with warnings.catch_warnings():
            # PIL only warns below twice its limit; refuse those files as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return decode(path, opened, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(
            f"{name} has more pixels than PIL.Image.MAX_IMAGE_PIXELS "
            f"({Image.MAX_IMAGE_PIXELS}), PIL's guard against decompression bombs; if you trust "
            "this file, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from err
    except ImageReadError:  # already says what is wrong with the file
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"{name} could not be read as an image: {err}") from err


def decode(path: Path, opened: Image.Image, name: str) -> Image.Image | SixteenBitColour:
    """The image of ``opened`` (``path``, opened by PIL), detached from the file: a PIL image,
    or both halves of a 16-bit colour PNG's values."""
    check_single_frame(opened, name)
    deep = read_sixteen_bit_colour(path, opened)
    if deep is not None:
        return deep
    opened.load()
    return opened.copy()  # survives closing the file


def file_not_found(path: Path, name: str) -> FileNotFoundError:
    """The error for a missing image file or directory, naming the argument and the path."""
    return FileNotFoundError(errno.ENOENT, f"{name}: no such image file or directory", str(path))


def file_label(name: str, element: Any) -> str:
    """``images[2] (photo.png)``: the argument and, for a file, its path."""
    if isinstance(element, (str, os.PathLike)):
        return f"{name} ({os.fspath(element)})"
    return name
