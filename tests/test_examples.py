"""The restoration examples of ``examples/`` run end to end on the shared images.

``examples/`` is not a package: each script is imported from its path, with the folder on
``sys.path`` for the module the three share (``_restoration_demo``).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latent_ot import metrics
from latent_ot.apps.demo_data import split_names
from latent_ot.autoencoders import load_autoencoder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RESTORATION_EXAMPLES = ("denoising", "super_resolution", "jpeg")
TINY = ["--n-train", "2", "--size", "64", "--held-out", "1", "--alphas", "0,1", "--seed", "0"]


@pytest.fixture
def load_example(monkeypatch):
    """Import ``examples/<name>.py`` by path and return the module."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name):
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _check_png(path: Path) -> None:
    with Image.open(path) as figure:
        assert figure.format == "PNG"
        width, height = figure.size
        figure.load()  # decodes every pixel: a truncated file raises here
    assert 150 <= width <= 3000 and 150 <= height <= 3000, (path.name, figure.size)


@pytest.mark.slow
@pytest.mark.parametrize("name", RESTORATION_EXAMPLES)
def test_example_writes_figures_and_the_restored_row_is_the_restorer(
    name, load_example, shared_dir, tmp_path, capsys
):
    example = load_example(name)
    argv = [*TINY, "--shared", str(shared_dir), "--output", str(tmp_path), "--device", "cpu"]

    rows = example.main(argv)

    _check_png(tmp_path / f"{name}.png")
    _check_png(tmp_path / f"{name}_curve.png")
    # 0 and 1 asked for, and the transformer's default alpha (0.25) added: the collage shows it.
    assert [row["alpha"] for row in rows] == [0.0, 0.25, 1.0]
    transported, _, restored_row = rows
    # alpha = 1 returns the restored images untouched: the row is the restorer's own scores,
    # computed here independently with latent_ot.metrics on the same images.
    demo = sys.modules["_restoration_demo"]
    images = demo.prepare_images(example.TASK, shared_dir, n_train=2, held_out=1, size=64, seed=0)
    assert restored_row["psnr"] == metrics.psnr(images.restored, images.clean)
    assert restored_row["ssim"] == metrics.ssim(images.restored, images.clean)
    taef2 = shared_dir / "weights" / "taef2"
    expected_w2 = metrics.latent_w2(
        images.restored, images.clean, taef2, patch_size=demo.PATCH_SIZE, device="cpu"
    )
    assert restored_row["latent_w2"] == pytest.approx(expected_w2, rel=1e-6)
    assert transported["psnr"] != restored_row["psnr"]  # alpha = 0 did change the images
    printed = capsys.readouterr().out
    assert f"| {restored_row['psnr']:.2f} | {restored_row['ssim']:.4f} |" in printed


@pytest.mark.slow
def test_natural_prior_replaces_the_natural_set(load_example, shared_dir, tmp_path, capsys):
    example = load_example("jpeg")
    argv = [*TINY, "--shared", str(shared_dir), "--output", str(tmp_path), "--device", "cpu"]

    with_prior = example.main([*argv, "--natural", "prior"])
    printed = capsys.readouterr().out
    with_cbsd68 = example.main(argv)

    # 64 px crops: the prior's smallest scale is the nearest to them.
    assert "natural side of the fit: the built-in prior of taef2, at scale 256 px" in printed
    assert with_prior[-1] == with_cbsd68[-1]  # alpha = 1: the decoded JPEGs, whatever the fit
    assert with_prior[0]["psnr"] != with_cbsd68[0]["psnr"]  # another natural side, another map
    assert "natural side of the fit: 2 clean CBSD68 crops" in capsys.readouterr().out


def test_prepare_images_uses_disjoint_training_sets_and_the_task(load_example, shared_dir):
    example = load_example("super_resolution")
    demo = sys.modules["_restoration_demo"]

    images = demo.prepare_images(example.TASK, shared_dir, n_train=3, held_out=2, size=64, seed=1)

    assert len(images.train_restored) == len(images.train_natural) == 3
    # Unpaired: no natural image is the clean version of a restored one (SR is deterministic).
    rng = np.random.default_rng(0)
    natural_restored = [example.TASK.degrade_and_restore(n, rng)[1] for n in images.train_natural]
    for restored in images.train_restored:
        assert not any(np.array_equal(restored, other) for other in natural_restored)
    assert len({image.tobytes() for image in images.train_natural}) == 3
    assert images.names == ["wikipedia-photos/047", "Set5/butterfly"]  # textures first
    assert [d.shape for d in images.degraded] == [(16, 16, 3)] * 2  # 4x downscaled
    assert {image.shape for image in [*images.restored, *images.clean]} == {(64, 64, 3)}
    # Bicubic is a blur of the clean image, close to it but not equal.
    assert 18 < metrics.psnr(images.restored, images.clean) < 40


def test_table_agrees_with_latent_ot_metrics(load_example, tmp_path, monkeypatch):
    load_example("denoising")  # puts _restoration_demo in sys.modules
    demo = sys.modules["_restoration_demo"]
    rng = np.random.default_rng(0)
    clean = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(2)]
    noise = [0.1 * rng.standard_normal((32, 32, 3)).astype(np.float32) for _ in clean]
    outputs = {
        0.0: [np.clip(c + n, 0, 1) for c, n in zip(clean, noise, strict=True)],
        1.0: [c**2 for c in clean],
    }
    # patch FID's default Inception network downloads; a pooling network stands in for it.
    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())

    def small_patch_fid(images, reference, **kwargs):
        return metrics.patch_fid(images, reference, crop_size=8, feature_extractor=pooled)

    monkeypatch.setattr(demo, "patch_fid", small_patch_fid)
    # The table's latent W2, with patches of the pixel autoencoder's 3 channels.
    monkeypatch.setattr(demo, "PATCH_SIZE", 2)

    rows = demo.perception_distortion_table(
        outputs, clean, load_autoencoder("pixel"), with_patch_fid=True
    )

    assert [row["alpha"] for row in rows] == [0.0, 1.0]
    for row, images in zip(rows, outputs.values(), strict=True):
        assert row["psnr"] == metrics.psnr(images, clean)
        assert row["ssim"] == metrics.ssim(images, clean)
        expected_w2 = metrics.latent_w2(images, clean, "pixel", patch_size=2)
        assert row["latent_w2"] == pytest.approx(expected_w2, rel=1e-9, abs=1e-12)
        assert row["patch_fid"] == small_patch_fid(images, clean)
    assert list(rows[0]) == ["alpha", "psnr", "ssim", "latent_w2", "patch_fid"]


def test_collage_has_a_row_per_stage_and_a_column_per_image(load_example, tmp_path):
    example = load_example("super_resolution")
    demo = sys.modules["_restoration_demo"]
    rng = np.random.default_rng(0)
    clean = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(2)]
    degraded, restored = zip(
        *(example.TASK.degrade_and_restore(image, rng) for image in clean), strict=True
    )
    images = demo.DemoImages([], [], ["Set5/a", "Set5/b"], clean, list(degraded), list(restored))

    demo.save_collage(example.TASK, images, {0.25: clean, 0.0: clean}, tmp_path / "collage.png")

    _check_png(tmp_path / "collage.png")
    with Image.open(tmp_path / "collage.png") as collage:
        # Two 64 px tiles 3 px apart, 128 px of row labels and 4 px of margin; five rows
        # (low resolution, bicubic, transported at two alphas, clean) and 64 px of titles.
        assert collage.size == (128 + 2 * 64 + 3 + 4, 64 + 5 * 64 + 4 * 3 + 4)


def test_denoising_noise_has_the_stated_level(load_example):
    example = load_example("denoising")
    clean = np.full((64, 64, 3), 0.5, dtype=np.float32)

    noisy, denoised = example.TASK.degrade_and_restore(clean, np.random.default_rng(0))

    assert noisy.std() == pytest.approx(50 / 255, rel=0.03)
    assert denoised.std() < noisy.std() / 3


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--size", "60"], "--size must be a positive multiple of 8"),
        (["--n-train", "0"], "--n-train must be between 1 and 34"),
        (["--held-out", "99"], "--held-out must be between 1 and"),
        (["--alphas", "0,one"], "or a comma-separated list"),
        (["--natural", "imagenet"], "argument --natural: invalid choice: 'imagenet'"),
    ],
)
def test_bad_options_are_named(option, message, load_example, shared_dir, capsys):
    example = load_example("jpeg")

    with pytest.raises(SystemExit):
        example.main(["--shared", str(shared_dir), *option])

    assert message in capsys.readouterr().err


def test_missing_shared_folder_is_named(load_example, tmp_path, capsys):
    example = load_example("jpeg")

    with pytest.raises(SystemExit):
        example.main(["--shared", str(tmp_path)])

    assert f"--shared: {tmp_path} holds no images/CBSD68" in capsys.readouterr().err


def test_held_out_images_are_the_test_split_and_none_is_a_validation_image(
    load_example, shared_dir
):
    load_example("jpeg")
    demo = sys.modules["_restoration_demo"]

    names = demo.held_out_names(shared_dir, 8)  # every image: none is under 8 px
    validation = split_names(shared_dir / "images", "validation")

    assert sorted(names) == sorted(split_names(shared_dir / "images", "test"))
    assert names[: len(demo.TEXTURES_FIRST)] == list(demo.TEXTURES_FIRST)
    assert not set(names) & set(validation)
    # Nor the same photo under another name: no held-out crop equals a validation crop.
    validation_pixels = {
        demo.read_crop(shared_dir / "images" / f"{n}.png", 64).tobytes() for n in validation
    }
    for name in names:
        crop = demo.read_crop(shared_dir / "images" / f"{name}.png", 64)
        assert crop.tobytes() not in validation_pixels, name
    # Images under --size are left out: Set5's woman is 228 px wide.
    assert "Set5/woman" in names and "Set5/woman" not in demo.held_out_names(shared_dir, 256)
