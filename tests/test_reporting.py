"""The metrics table (CSV, markdown) and the figures of a sweep; the demo's photos."""

import csv
import math
import sys

import numpy as np
import pytest
from PIL import Image

from latent_ot.apps.demo_data import DEMO_PHOTOS, sample_photos
from latent_ot.apps.reports import (
    collage,
    format_value,
    markdown_table,
    plot_perception_distortion,
    write_csv,
    write_markdown,
)

ALPHAS = (0.0, 0.25, 0.5, 1.0)


def sweep_rows() -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    return [
        {
            "alpha": alpha,
            "psnr": 24 + 4 * alpha + float(rng.normal()) / 3,  # digits a round trip could lose
            "ssim": 0.6 + 0.2 * alpha + float(rng.uniform()) / 1e6,
            "patch_fid": 12.0 + 30 * alpha + math.pi,
        }
        for alpha in ALPHAS
    ]


def test_csv_reads_back_to_the_same_numbers(tmp_path):
    rows = sweep_rows()
    path = tmp_path / "new" / "folder" / "metrics.csv"
    write_csv(rows, path)
    with open(path, newline="", encoding="utf-8") as file:
        read = list(csv.DictReader(file))
    assert [list(row) for row in read] == [list(row) for row in rows]
    assert [{key: float(value) for key, value in row.items()} for row in read] == rows


def test_csv_keeps_string_cells(tmp_path):
    rows = [{"images": "out/*.png, more", "psnr": 30.5}]
    write_csv(rows, tmp_path / "table.csv")
    with open(tmp_path / "table.csv", newline="", encoding="utf-8") as file:
        assert list(csv.DictReader(file)) == [{"images": "out/*.png, more", "psnr": "30.5"}]


def test_markdown_has_a_header_a_rule_and_one_row_per_alpha():
    rows = sweep_rows()
    lines = markdown_table(rows).splitlines()
    header, rule, *body = lines
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(rows[0])
    assert set(rule) <= {"|", "-", ":"} and rule.count("|") == len(rows[0]) + 1
    assert len(body) == len(ALPHAS)
    for line, row in zip(body, rows, strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells == [format_value(name, value) for name, value in row.items()]
        assert float(cells[0]) == row["alpha"]
    assert len({len(line) for line in lines}) == 1  # columns padded to one width


def test_markdown_aligns_numbers_right_and_text_left():
    table = markdown_table([{"images": "a", "psnr": 30.0}, {"images": "longer", "psnr": 5.0}])
    assert table.splitlines() == [
        "| images |  psnr |",
        "|--------|------:|",
        "| a      | 30.00 |",
        "| longer |  5.00 |",
    ]


def test_write_markdown_writes_and_returns_the_table(tmp_path):
    rows = sweep_rows()
    table = write_markdown(rows, tmp_path / "sub" / "metrics.md")
    assert table == markdown_table(rows)
    assert (tmp_path / "sub" / "metrics.md").read_text(encoding="utf-8") == table + "\n"


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("alpha", 0.25, "0.25"),
        ("alpha", -1.0, "-1"),
        ("psnr", 30.126, "30.13"),
        ("ssim", 0.912345, "0.9123"),
        ("fid", 123.456, "123.5"),
        ("images", "a b", "a b"),
    ],
)
def test_format_value(name, value, shown):
    assert format_value(name, value) == shown


@pytest.mark.parametrize("write", [write_csv, write_markdown])
def test_an_empty_table_is_refused_by_name(write, tmp_path):
    with pytest.raises(ValueError, match="rows must hold at least one row"):
        write([], tmp_path / "table")
    assert not (tmp_path / "table").exists()


def test_curve_png_opens_at_the_expected_size(tmp_path):
    curve = plot_perception_distortion(sweep_rows())
    curve.save(tmp_path / "curve.png")
    with Image.open(tmp_path / "curve.png") as image:
        assert image.format == "PNG"
        assert image.size == (768, 576)  # 6.4 x 4.8 inches at 120 dpi
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something was drawn


def test_curve_leaves_out_points_that_are_not_finite():
    rows = sweep_rows()
    with_nan = [*rows, {**rows[0], "alpha": 2.0, "psnr": math.nan}]
    assert np.array_equal(
        np.asarray(plot_perception_distortion(with_nan)),
        np.asarray(plot_perception_distortion(rows)),
    )


@pytest.mark.parametrize("missing", ["psnr", "patch_fid"])
def test_no_curve_without_psnr_or_a_perception_measure(missing):
    rows = [{key: value for key, value in row.items() if key != missing} for row in sweep_rows()]
    assert plot_perception_distortion(rows) is None


@pytest.mark.parametrize(("n_rows", "n_columns"), [(1, 1), (4, 3), (2, 5)])
def test_collage_size_is_the_grid_of_tiles(n_rows, n_columns):
    rng = np.random.default_rng(n_rows * 10 + n_columns)
    rows_of_images = {
        f"row {r}": [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(n_columns)]
        for r in range(n_rows)
    }
    image = collage(rows_of_images, [f"title {c}" for c in range(n_columns)])
    assert image.mode == "RGB"
    # 288-pixel tiles (2.4 inches at 120 dpi) and a 48-pixel strip for the row labels
    assert image.size == (288 * n_columns + 48, 288 * n_rows)


def test_collage_refuses_a_row_without_one_image_per_title():
    tile = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="row 'short' holds 1 image"):
        collage({"full": [tile, tile], "short": [tile]}, ["a", "b"])
    with pytest.raises(ValueError, match="at least one row and one title"):
        collage({}, [])


def test_sample_photos_are_square_uint8_in_order():
    photos = sample_photos(3, size=40)
    assert list(photos) == list(DEMO_PHOTOS[:3])
    for pixels in photos.values():
        assert pixels.shape == (40, 40, 3) and pixels.dtype == np.uint8
    with pytest.raises(ValueError, match="count must be in"):
        sample_photos(len(DEMO_PHOTOS) + 1, size=40)


class _FixedMetrics:
    """Stands in for the CLI's metrics: fixed values per alpha, labels unchanged."""

    def __init__(self) -> None:
        self.values = iter([{"psnr": 20.0, "fid": 3.0}, {"psnr": 25.0, "fid": 5.0}])

    def __call__(self, images, reference, progress=None, latent_stats=None):
        return next(self.values)

    def labelled(self, row):
        return row


def test_a_report_without_matplotlib_writes_its_tables_and_notes_the_curve(
    tmp_path, monkeypatch, capsys
):
    from latent_ot.cli._console import Console
    from latent_ot.cli._report import measure_and_report

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    outputs = [[np.zeros((8, 8, 3))], [np.zeros((8, 8, 3))]]

    measure_and_report([0.0, 1.0], outputs, None, _FixedMetrics(), tmp_path, Console(quiet=False))

    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "metrics.md").is_file()
    assert not (tmp_path / "curve.png").exists()
    assert 'no curve: drawing figures needs matplotlib: pip install "latent-ot[plots]"' in (
        capsys.readouterr().err
    )
