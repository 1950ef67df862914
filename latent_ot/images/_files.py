"""Image files: which files are images, reading one safely, listing a directory's."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from ..exceptions import ImageReadError

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


def read_image_file(path: Path, name: str) -> Image.Image:
    """The decoded first frame of the image file ``path``, detached from the file."""
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
                opened.load()
                return opened.copy()  # survives closing the file, which multi-frame formats need
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(
            f"{name} has more pixels than PIL.Image.MAX_IMAGE_PIXELS "
            f"({Image.MAX_IMAGE_PIXELS}), PIL's guard against decompression bombs; if you trust "
            "this file, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"{name} could not be read as an image: {err}") from err


def file_not_found(path: Path, name: str) -> FileNotFoundError:
    """The error for a missing image file or directory, naming the argument and the path."""
    return FileNotFoundError(errno.ENOENT, f"{name}: no such image file or directory", str(path))


def file_label(name: str, element: Any) -> str:
    """``images[2] (photo.png)``: the argument and, for a file, its path."""
    if isinstance(element, (str, os.PathLike)):
        return f"{name} ({os.fspath(element)})"
    return name
