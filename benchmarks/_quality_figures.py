"""The figures of ``quality.py``: collages of every alpha and fine-structure crops at 2x zoom.

- `write_collages`: for each page of `COLLAGE_ROWS` test images, ``collage_NN.png`` (center
  crops: clean, then every alpha from 1 down) and ``fine_NN.png`` (`write_fine_collage`);
- `finest_window`: where an image's finest structure is, the square with the largest mean
  absolute Laplacian: where a latent grid or ringing shows first;
- `zoomed_grid`: tiles enlarged by nearest neighbour, every pixel a block, nothing resampled,
  so that an 8-pixel period stays visible as such.

PNGs are saved at Pillow's default compression: ``optimize=True`` made them 3 % smaller for
four to eight times the time, the largest part of a quick run's writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _quality_tasks import TaskImages, center_crop
from PIL import Image, ImageDraw

from latent_ot.apps.reports import collage

FINE_CROP = 96  # px of the fine-structure crops, shown at 2x zoom
COLLAGE_ROWS = 4  # test images per collage


def write_collages(
    outputs: list[list[np.ndarray]],
    images: TaskImages,
    alphas: Sequence[float],
    default_alpha: float,
    folder: Path,
    collage_crop: int,
) -> None:
    """``collage_NN.png`` and ``fine_NN.png`` under ``folder``, `COLLAGE_ROWS` images a page;
    ``outputs[k][i]`` is image ``i`` at ``alphas[k]``."""
    for page, start in enumerate(range(0, len(images.names), COLLAGE_ROWS), start=1):
        picked = range(start, min(start + COLLAGE_ROWS, len(images.names)))
        write_collage(
            outputs, images, picked, alphas, collage_crop, folder / f"collage_{page:02d}.png"
        )
        write_fine_collage(
            outputs, images, picked, alphas, default_alpha, folder / f"fine_{page:02d}.png"
        )


def write_collage(
    outputs: list[list[np.ndarray]],
    images: TaskImages,
    picked: range,
    alphas: Sequence[float],
    crop: int,
    path: Path,
) -> None:
    """Center crops of ``crop`` px of the ``picked`` test images: clean, then every alpha
    from 1 down."""
    order = sorted(range(len(alphas)), key=lambda k: -alphas[k])
    titles = ["clean"] + [
        f"alpha={alphas[k]:g}" + (" (restorer)" if alphas[k] == 1.0 else "") for k in order
    ]
    rows = {}
    for i in picked:
        label = images.names[i].replace("wikipedia-photos/", "wiki ").replace("Set14/", "")
        row = [images.clean[i]] + [outputs[k][i] for k in order]
        rows[label] = [center_crop(image, crop) for image in row]
    collage(rows, titles).save(path)


def finest_window(image: np.ndarray, size: int, step: int = 16) -> tuple[int, int]:
    """The top left corner of the ``size`` px square of ``image`` with the most fine
    structure: the largest mean absolute Laplacian of the grey levels, on a ``step`` grid.

    Examples
    --------
    >>> image = np.zeros((64, 64, 3))
    >>> image[32:48, 16:32] = np.indices((16, 16)).sum(0)[..., None] % 2
    >>> finest_window(image, 16)
    (32, 16)
    """
    grey = image.astype(np.float64).mean(axis=2)
    laplacian = np.abs(
        4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    size = min(size, *laplacian.shape)
    corners = [
        (top, left)
        for top in range(0, laplacian.shape[0] - size + 1, step)
        for left in range(0, laplacian.shape[1] - size + 1, step)
    ]
    return max(corners, key=lambda c: laplacian[c[0] : c[0] + size, c[1] : c[1] + size].mean())


def zoomed_grid(rows: dict[str, list[np.ndarray]], titles: Sequence[str], zoom: int) -> Image.Image:
    """Equal-size tiles, each enlarged ``zoom`` times by nearest neighbour (every pixel
    shown as a block, nothing resampled), with a title above each column and a label above
    each row."""
    tiles = [[tile.repeat(zoom, 0).repeat(zoom, 1) for tile in row] for row in rows.values()]
    height, width = tiles[0][0].shape[:2]
    gap, text = 4, 14
    canvas = Image.new(
        "RGB",
        (len(titles) * (width + gap), len(rows) * (height + text + gap) + text),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * (width + gap) + 2, 0), title, fill="black")
    for r, (label, row) in enumerate(zip(rows, tiles, strict=True)):
        top = text + r * (height + text + gap)
        draw.text((2, top), label, fill="black")
        for column, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (column * (width + gap), top + text))
    return canvas


def write_fine_collage(
    outputs: list[list[np.ndarray]],
    images: TaskImages,
    picked: range,
    alphas: Sequence[float],
    default_alpha: float,
    path: Path,
) -> None:
    """Each picked image's finest `FINE_CROP` px square at 2x zoom: clean, the restorer,
    the default alpha and alpha 0 (those of them in ``alphas``)."""
    wanted = sorted({1.0, default_alpha, 0.0}, reverse=True)
    columns = [list(alphas).index(alpha) for alpha in wanted if alpha in alphas]
    titles = ["clean"] + [f"alpha={alphas[k]:g}" for k in columns]
    rows = {}
    for i in picked:
        top, left = finest_window(images.clean[i], FINE_CROP)
        size = min(FINE_CROP, *images.clean[i].shape[:2])
        row = [images.clean[i]] + [outputs[k][i] for k in columns]
        rows[images.names[i]] = [image[top : top + size, left : left + size] for image in row]
    zoomed_grid(rows, titles, zoom=2).save(path)
