"""Reports of a sweep over alpha: the metrics table (CSV, markdown) and the figures.

The CLI, the examples and the benchmarks write these; the library itself never imports
them. A table is a list of rows, each a dict of column name to value, every row with the same keys:
numbers (``alpha``, ``psnr``, ``fid``, ...) or strings (``images``). The figures are PIL
images drawn with matplotlib's object API on the Agg canvas: no pyplot, no global backend,
nothing shown on screen. Tables need nothing beyond the core install; figures need matplotlib
(the ``plots`` extra, which the ``demo`` extra includes).

- `markdown_table`, `write_markdown` and `write_csv` write the table;
- `format_value` is how one cell is shown;
- `plot_perception_distortion` draws the trade-off curve of a sweep;
- `collage` lays images out on a labelled grid.

Examples
--------
>>> rows = [{"alpha": 0.0, "psnr": 24.5, "fid": 31.0}, {"alpha": 1.0, "psnr": 27.1, "fid": 48.2}]
>>> print(markdown_table(rows))
| alpha |  psnr |  fid |
|------:|------:|-----:|
|     0 | 24.50 |   31 |
|     1 | 27.10 | 48.2 |
>>> plot_perception_distortion(rows).size
(768, 576)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._optional import require

__all__ = [
    "PERCEPTION_AXES",
    "collage",
    "format_value",
    "markdown_table",
    "plot_perception_distortion",
    "write_csv",
    "write_markdown",
]

Row = Mapping[str, Any]

#: The curve's perception axis: the first of these a table has. Patch FID first: FID on a
#: handful of images says little.
PERCEPTION_AXES = ("patch_fid", "fid", "kid", "latent_w2")

_ALPHA = "\N{GREEK SMALL LETTER ALPHA}"
_METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "fid": "FID",
    "kid": "KID",
    "is": "Inception score",
    "patch_fid": "patch FID",
    "latent_w2": "latent W2",
}

# Figures are drawn at this resolution; a collage tile is _TILE_INCHES square.
_DPI = 120
_TILE_INCHES = 2.4


# --------------------------------------------------------------------------------------------
# Tables


def format_value(name: str, value: Any) -> str:
    """How the value of column ``name`` is shown in a table.

    Alpha as short as it can be, PSNR with 2 decimals, SSIM with 4, any other number with 4
    significant digits; a string as it is.

    Parameters
    ----------
    name : str
        The column's name (``"alpha"``, ``"psnr"``, ...).
    value : float or str
        The cell's value.

    Returns
    -------
    str
        The cell as text.

    Examples
    --------
    >>> format_value("psnr", 30.123), format_value("ssim", 0.91234), format_value("fid", 12.3456)
    ('30.12', '0.9123', '12.35')
    >>> format_value("alpha", 0.25)
    '0.25'
    """
    if isinstance(value, str):
        return value
    if name == "alpha":
        return f"{value:g}"
    if name == "psnr":
        return f"{value:.2f}"
    if name == "ssim":
        return f"{value:.4f}"
    return f"{value:.4g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """A markdown table of ``rows``, numbers right-aligned, cells shown by `format_value`.

    Parameters
    ----------
    rows : sequence of dict
        The rows of the table, all with the keys of the first, which name the columns.

    Returns
    -------
    str
        The table: a header row, a rule, then one line per row (no trailing newline).

    Examples
    --------
    >>> print(markdown_table([{"alpha": 0.5, "psnr": 30.123}]))
    | alpha |  psnr |
    |------:|------:|
    |   0.5 | 30.12 |
    """
    columns = _columns(rows)
    cells = [[format_value(column, row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    right = [not isinstance(rows[0][column], str) for column in columns]

    def line(values: list[str]) -> str:
        padded = (
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    ends = [":" if align else "-" for align in right]  # ":" aligns a column right
    rule = "|" + "|".join("-" * (w + 1) + end for w, end in zip(widths, ends, strict=True)) + "|"
    return "\n".join([line(columns), rule, *(line(values) for values in cells)])


def write_markdown(rows: Sequence[Row], path: str | Path) -> str:
    """Write ``rows`` as a markdown table (see `markdown_table`) to ``path``.

    The parent directories are created if needed.

    Parameters
    ----------
    rows : sequence of dict
        The rows of the table, all with the keys of the first.
    path : str or Path
        The file to write.

    Returns
    -------
    str
        The table written, without its trailing newline: the caller may also print it.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.md"
    >>> table = write_markdown([{"alpha": 0.5, "psnr": 30.123}], path)
    >>> path.read_text(encoding="utf-8") == table + "\\n"
    True
    """
    table = markdown_table(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table + "\n", encoding="utf-8")
    return table


def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    """Write ``rows`` as CSV to ``path``, numbers at full precision.

    Numbers are written with ``repr(float(value))``, which reads back to the same float;
    strings as they are. The parent directories are created if needed.

    Parameters
    ----------
    rows : sequence of dict
        The rows of the table, all with the keys of the first, which make the header.
    path : str or Path
        The file to write.

    Examples
    --------
    >>> import csv, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.csv"
    >>> write_csv([{"alpha": 0.5, "psnr": 30.123456789}], path)
    >>> with open(path, newline="", encoding="utf-8") as file:
    ...     list(csv.DictReader(file))
    [{'alpha': '0.5', 'psnr': '30.123456789'}]
    """
    columns = _columns(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(
            {
                key: value if isinstance(value, str) else repr(float(value))
                for key, value in row.items()
            }
            for row in rows
        )


def _columns(rows: Sequence[Row]) -> list[str]:
    if len(rows) == 0:
        raise ValueError("rows must hold at least one row (a dict of column name to value)")
    return list(rows[0])


# --------------------------------------------------------------------------------------------
# Figures


def plot_perception_distortion(rows: Sequence[Row]) -> Image.Image | None:
    """The perception-distortion curve of a sweep's table, one labelled point per alpha.

    x is the distortion (PSNR), y the first perception measure the table has, in the order
    of `PERCEPTION_AXES` (patch FID, FID, KID, latent W2). The restored input (alpha = 1)
    and the transported images (alpha = 0) are marked. Rows with a value that is not finite
    are left out.

    Parameters
    ----------
    rows : sequence of dict
        The table of a sweep: an ``alpha`` column, ``psnr`` and a perception measure.

    Returns
    -------
    PIL.Image.Image or None
        The curve, an RGB image of 768 x 576 pixels; None when the table lacks PSNR or a
        perception measure.

    Examples
    --------
    >>> rows = [{"alpha": a, "psnr": 25 + 3 * a, "fid": 20 + 10 * a} for a in (0, 0.5, 1)]
    >>> plot_perception_distortion(rows).size
    (768, 576)
    >>> plot_perception_distortion([{"alpha": 0.0, "ssim": 0.9}]) is None
    True
    """
    columns = _columns(rows)
    perception = next((name for name in PERCEPTION_AXES if name in columns), None)
    if "psnr" not in columns or perception is None:
        return None
    figure_class = _figure_class()
    points = sorted(
        (row["alpha"], row["psnr"], row[perception])
        for row in rows
        if math.isfinite(row["psnr"]) and math.isfinite(row[perception])
    )
    figure = figure_class(figsize=(6.4, 4.8), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.plot([p[1] for p in points], [p[2] for p in points], "-o", color="C0", zorder=1)
    for alpha, x, y in points:
        axes.annotate(f"{_ALPHA}={alpha:g}", (x, y), textcoords="offset points", xytext=(6, 6))
    ends = {
        1.0: ("s", "C3", f"restored input ({_ALPHA} = 1)"),
        0.0: ("*", "C2", f"transported ({_ALPHA} = 0)"),
    }
    for alpha, x, y in points:
        if alpha in ends:
            marker, color, label = ends[alpha]
            axes.scatter([x], [y], marker=marker, s=140, color=color, label=label, zorder=2)
    axes.set_xlabel("distortion: PSNR (dB), higher is closer to the clean image")
    axes.set_ylabel(f"perception: {_METRIC_LABELS[perception]}, lower is more natural")
    axes.set_title("Perception-distortion trade-off over alpha")
    axes.margins(0.12)  # room for the labels of the outermost points
    axes.grid(alpha=0.3)
    if any(alpha in ends for alpha, _, _ in points):
        axes.legend()
    return _rendered(figure)


def collage(
    rows_of_images: Mapping[str, Sequence[np.ndarray]], titles: Sequence[str]
) -> Image.Image:
    """Images on a grid: one labelled row per entry of ``rows_of_images``, one titled column
    per entry of ``titles``.

    Each tile is 288 pixels square (2.4 inches at 120 dpi), the image fitted inside it; a
    strip 48 pixels wide on the left holds the row labels.

    Parameters
    ----------
    rows_of_images : dict of str to list of numpy.ndarray
        Row label to that row's images, ``H x W x 3`` arrays (uint8, or floats in [0, 1]),
        one per column.
    titles : sequence of str
        The title of each column, shown above the first row.

    Returns
    -------
    PIL.Image.Image
        The collage, an RGB image of ``288 * len(titles) + 48`` by
        ``288 * len(rows_of_images)`` pixels.

    Examples
    --------
    >>> import numpy as np
    >>> tile = np.zeros((32, 32, 3), dtype=np.uint8)
    >>> collage({"noisy": [tile, tile], "clean": [tile, tile]}, ["cat", "dog"]).size
    (624, 576)
    """
    n_rows, n_columns = len(rows_of_images), len(titles)
    if n_rows == 0 or n_columns == 0:
        raise ValueError(
            f"a collage needs at least one row and one title; got {n_rows} row(s) and "
            f"{n_columns} title(s)"
        )
    for label, images in rows_of_images.items():
        if len(images) != n_columns:
            raise ValueError(
                f"row {label!r} holds {len(images)} image(s); expected one per title ({n_columns})"
            )
    figure_class = _figure_class()
    side = _TILE_INCHES
    figure = figure_class(
        figsize=(side * n_columns + 0.4, side * n_rows), dpi=_DPI, layout="constrained"
    )
    grid = figure.subplots(n_rows, n_columns, squeeze=False)
    for row, (label, images) in enumerate(rows_of_images.items()):
        for column, image in enumerate(images):
            axes = grid[row][column]
            axes.imshow(image)
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(label, fontsize=12)
            if row == 0:
                axes.set_title(titles[column], fontsize=10)
    return _rendered(figure)


def _figure_class() -> type:
    """matplotlib's Figure, imported on first use: it takes a while, and only figures need it."""
    return require("matplotlib.figure", extra="plots", purpose="drawing figures").Figure


def _rendered(figure) -> Image.Image:
    backend = require("matplotlib.backends.backend_agg", extra="plots", purpose="drawing figures")
    canvas = backend.FigureCanvasAgg(figure)  # no pyplot: no global backend, nothing shown
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
