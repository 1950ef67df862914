"""The pieces of ``benchmarks/quality.py``: summary numbers, degradations, crops, measures.

``benchmarks/`` is not a package: its modules are imported with the folder on ``sys.path``.
The measures that need the benchmark's own packages (``pip install -e .[bench]``) are
skipped without them.
"""

import importlib
import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from latent_ot import metrics

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmark's four modules."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield SimpleNamespace(
            tasks=importlib.import_module("_quality_tasks"),
            measures=importlib.import_module("_quality_measures"),
            figures=importlib.import_module("_quality_figures"),
            quality=importlib.import_module("quality"),
        )
    for name in ("_quality_tasks", "_quality_measures", "_quality_figures", "quality"):
        sys.modules.pop(name, None)


def _psnr(image, reference) -> float:
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / error)


def _smooth_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a little texture, uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * x * y], axis=-1)
    image = image + 0.02 * rng.standard_normal(image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- summary numbers


def _rows(points):
    return [{"alpha": a, "psnr": p, "kid_mobilenet": k} for a, p, k in points]


def test_best_alpha_is_the_lowest_kid_within_one_db_of_the_restorer(bench):
    rows = _rows(
        [
            (-0.5, 22.0, 0.05),
            (0.0, 24.0, 0.10),
            (0.5, 26.2, 0.30),
            (0.75, 26.8, 0.60),
            (1.0, 27.0, 1.20),
        ]
    )
    numbers = bench.measures.summary_numbers(rows, clean_kid=0.2)
    # alpha 0 and -0.5 have lower KID but lose more than 1 dB: 0.5 is the best within it.
    assert numbers["best_alpha"] == 0.5
    assert numbers["kid_drop_pct"] == pytest.approx(100 * (1.2 - 0.3) / 1.2)
    assert numbers["psnr_loss_at_0"] == pytest.approx(3.0)
    assert numbers["restorer_kid"] == 1.2 and numbers["kid_at_0"] == 0.1
    # Of the restorer's 1.0 above the clean images' KID, 0.9 is gone.
    assert numbers["kid_excess_drop_pct"] == pytest.approx(90.0)


def test_no_better_alpha_within_one_db_means_no_drop(bench):
    rows = _rows([(0.0, 20.0, 0.1), (0.5, 25.0, 0.9), (1.0, 27.0, 1.0)])
    numbers = bench.measures.summary_numbers(rows)
    assert numbers["best_alpha"] == 1.0 and numbers["kid_drop_pct"] == 0.0


def test_a_restorer_kid_that_is_not_positive_gives_no_relative_drop(bench):
    rows = _rows([(0.0, 26.5, -0.2), (1.0, 27.0, -0.1)])
    numbers = bench.measures.summary_numbers(rows, clean_kid=0.0)
    assert math.isnan(numbers["kid_drop_pct"]) and math.isnan(numbers["kid_excess_drop_pct"])


def test_summary_needs_both_ends_of_the_sweep(bench):
    with pytest.raises(ValueError, match=r"alpha = 0 and alpha = 1; got alphas \[0.5, 1.0\]"):
        bench.measures.summary_numbers(_rows([(0.5, 25.0, 0.5), (1.0, 27.0, 1.0)]))


# --------------------------------------------------------------------------- tasks


def test_bicubic_x4_keeps_the_size_and_removes_fine_detail(bench):
    rng = np.random.default_rng(0)
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checker[..., None], 3, axis=-1)
    bicubic_x4 = bench.tasks.TASKS["super_resolution"].degrade_and_restore
    restored = bicubic_x4(image, rng)
    assert restored.shape == image.shape and restored.dtype == np.uint8
    # A one-pixel checkerboard is above the Nyquist limit of the x4 grid: it averages out.
    assert restored[8:-8, 8:-8].std() < 0.1 * image.std()
    flat = np.full((32, 48, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(bicubic_x4(flat, rng), flat)


def test_jpeg_q10_is_blocky_and_deterministic(bench):
    image = _smooth_image(64)
    jpeg_q10 = bench.tasks.TASKS["jpeg"].degrade_and_restore
    first = jpeg_q10(image, np.random.default_rng(0))
    second = jpeg_q10(image, np.random.default_rng(1))
    np.testing.assert_array_equal(first, second)
    assert first.shape == image.shape and first.dtype == np.uint8
    # 8 x 8 blocks: the jumps across block borders outweigh those inside blocks.
    steps = np.abs(np.diff(first.astype(float), axis=1)).mean(axis=(0, 2))
    borders = steps[7::8]
    inside = np.delete(steps, np.s_[7::8])
    assert borders.mean() > 2 * inside.mean()
    # Quality 10 is much coarser than quality 95.
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    fine = np.asarray(Image.open(buffer))
    assert _psnr(first, image) < _psnr(fine, image) - 5


def test_denoising_restores_and_seeds_the_noise_per_image(bench):
    tasks = bench.tasks
    image = _smooth_image(48)
    denoise_nlm = tasks.TASKS["denoising"].degrade_and_restore
    restored = denoise_nlm(image, tasks.image_rng(0, "a"))
    assert restored.shape == image.shape and restored.dtype == np.uint8
    noisy = image / 255 + tasks.image_rng(0, "a").normal(0.0, 50 / 255, image.shape)
    assert _psnr(restored, image) > _psnr(tasks.to_uint8(noisy), image) + 5
    again = denoise_nlm(image, tasks.image_rng(0, "a"))
    other = denoise_nlm(image, tasks.image_rng(0, "b"))
    np.testing.assert_array_equal(restored, again)
    assert not np.array_equal(restored, other)


def test_center_crop_and_grid_crops(bench):
    tasks = bench.tasks
    image = np.arange(70 * 41 * 3).reshape(70, 41, 3)
    crop = tasks.center_crop(image, 64)
    assert crop.shape == (64, 40, 3)
    np.testing.assert_array_equal(crop, image[3:67, 0:40])
    with pytest.raises(ValueError, match="under 8"):
        tasks.center_crop(np.zeros((7, 20, 3)))
    crops = tasks.grid_crops(image, 20)  # 3 x 2 crops, centered: 5 px top, 0 px left
    assert len(crops) == 6
    np.testing.assert_array_equal(crops[0], image[5:25, 0:20])
    np.testing.assert_array_equal(crops[-1], image[45:65, 20:40])
    assert tasks.grid_crops(image, 50) == []


def test_fit_halves_are_disjoint_and_reproducible(bench, tmp_path):
    folder = tmp_path / "images" / "CBSD68"
    folder.mkdir(parents=True)
    for number in range(9):
        (folder / f"{number}.png").touch()
    restored, natural = bench.tasks.fit_files(tmp_path, 4, seed=3)
    assert len(restored) == len(natural) == 4 and not set(restored) & set(natural)
    assert (restored, natural) == bench.tasks.fit_files(tmp_path, 4, seed=3)
    with pytest.raises(ValueError, match="--n-fit must be between 1 and 4, got 5"):
        bench.tasks.fit_files(tmp_path, 5, seed=3)


def test_splits_are_disjoint_and_the_test_split_skips_the_fit_images(bench, tmp_path):
    for folder, stems in (("Set14", ["zebra"]), ("Set5", ["baby"]), ("CBSD68", ["1", "2", "3"])):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for stem in stems:
            (tmp_path / "images" / folder / f"{stem}.png").touch()
    validation = bench.tasks.held_out_names(tmp_path, "validation")
    fit = [tmp_path / "images" / "CBSD68" / "2.png"]
    test = bench.tasks.held_out_names(tmp_path, "test", fit)
    number = [int(n.split("/")[1]) for n in validation if n.startswith("wikipedia")]
    assert validation[0] == "Set14/zebra" and number == list(range(36, 43))
    number = [int(n.split("/")[1]) for n in test if n.startswith("wikipedia")]
    assert number == list(range(43, 50))
    assert test[-3:] == ["Set5/baby", "CBSD68/1", "CBSD68/3"]
    assert not set(validation) & set(test)
    with pytest.raises(ValueError, match="split: one of \\('validation', 'test'\\), got 'train'"):
        bench.tasks.held_out_names(tmp_path, "train")


def test_restorations_are_cached_by_task_seed_name_and_pixels(bench, tmp_path):
    calls = []

    def restore(clean, rng):
        calls.append(rng.integers(1000))
        return 255 - clean

    image = _smooth_image(16)
    first = bench.tasks.cached_restore(restore, image, (0, "Set5/a"), tmp_path, "task")
    again = bench.tasks.cached_restore(restore, image, (0, "Set5/a"), tmp_path, "task")
    np.testing.assert_array_equal(first, 255 - image)
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 1  # the second came from the disk
    bench.tasks.cached_restore(restore, image[:8], (0, "Set5/a"), tmp_path, "task")
    bench.tasks.cached_restore(restore, image, (1, "Set5/a"), tmp_path, "task")
    assert len(calls) == 3  # other pixels, another seed: restored again
    # The generator is the image's own: the same draw with or without the cache.
    assert calls[0] == bench.tasks.image_rng(0, "Set5/a").integers(1000)


def test_learned_sr_outputs_keep_the_clean_size(bench):
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    fitted = bench.tasks._fit_size(image, 6, 6)
    assert fitted.shape == (6, 6, 3)
    np.testing.assert_array_equal(fitted[:5], image[:, :6])
    np.testing.assert_array_equal(fitted[5], image[4, :6])  # edge rows repeated


# --------------------------------------------------------------------------- measures


def _mean_colour(images: torch.Tensor) -> torch.Tensor:
    """A toy feature network: mean and std of each channel."""
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def test_distribution_measures_compare_unpaired_halves(bench):
    rng = np.random.default_rng(0)
    images = [(rng.random((16, 24, 3)) * 255 * (k + 1) / 6).astype(np.uint8) for k in range(6)]
    outputs = [np.clip(image.astype(int) + 30, 0, 255).astype(np.uint8) for image in images]
    row = bench.measures.distribution_measures(
        outputs, images, extractors={"toy": _mean_colour}, inception=False, crop_size=8, seed=0
    )
    # Even outputs against odd clean images and the other way round: never a pair.
    expected = []
    for mine, other in ((0, 1), (1, 0)):
        crops = bench.tasks.all_crops(outputs[mine::2], 8)
        reference = bench.tasks.all_crops(images[other::2], 8)
        expected.append(
            metrics.kid(
                crops,
                reference,
                feature_extractor=_mean_colour,
                subsets=bench.measures.KID_SUBSETS,
                random_state=0,
            )
        )
    assert row["kid_toy"] == pytest.approx(np.mean(expected))
    assert set(row) == {"fd_toy", "kid_toy"}
    too_few = bench.measures.distribution_measures(
        outputs[:2], images[:2], extractors={"toy": _mean_colour}, inception=False, crop_size=16,
        seed=0,
    )  # fmt: skip
    assert math.isnan(too_few["kid_toy"]) and math.isnan(too_few["fd_toy"])


def test_judge_numbers_read_the_grid_and_the_second_network(bench):
    rows = [
        {"alpha": 0.0, "grid": 1.4, "kid_rdn": 0.6},
        {"alpha": 0.5, "grid": 1.2, "kid_rdn": 0.3},
        {"alpha": 1.0, "grid": 1.0, "kid_rdn": 0.4},
    ]
    numbers = bench.measures.judge_numbers(rows, best_alpha=0.5, default_alpha=0.25)
    assert numbers["grid_at_0"] == 1.4 and numbers["grid_best"] == 1.2
    assert numbers["grid_restorer"] == 1.0 and math.isnan(numbers["grid_at_default"])
    assert numbers["rdn_kid_change_best_pct"] == pytest.approx(-25.0)
    assert numbers["rdn_kid_change_at_0_pct"] == pytest.approx(50.0)
    without = bench.measures.judge_numbers([{"alpha": 0.0}, {"alpha": 1.0}], 1.0, 0.0)
    assert math.isnan(without["rdn_kid_change_at_0_pct"]) and math.isnan(without["grid_at_0"])


def test_rdn_features_pool_mean_and_std_of_the_deep_features(bench, shared_dir):
    features = bench.measures.RDNFeatures(shared_dir / bench.measures.RDN_MODEL)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((2, 3, 24, 24))).float()
    pooled = features(batch)
    assert pooled.shape == (2, 128)
    pixels = (batch[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    with torch.inference_mode():
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        deep = features._model(x, bench.measures.RDN_LAYER)[0].double().flatten(1)
    torch.testing.assert_close(pooled[0, :64], deep.mean(1))
    torch.testing.assert_close(pooled[0, 64:], deep.std(1))
    assert float(pooled[:, 64:].min()) >= 0
    # With a crop, the pooled features are those of the central square alone.
    centre = bench.measures.RDNFeatures(shared_dir / bench.measures.RDN_MODEL, crop=8)
    with torch.inference_mode():
        middle = x[:, :, 8:16, 8:16]
        deep = centre._model(middle, bench.measures.RDN_LAYER)[0].double().flatten(1)
    torch.testing.assert_close(centre(batch[:1])[0, :64], deep.mean(1))


def test_ssim_is_latent_ots_definition(bench):
    rng = np.random.default_rng(1)
    clean = [_smooth_image(40, seed=k) for k in range(2)] + [_smooth_image(24, seed=2)[:, :20]]
    noisy = [
        np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8) for image in clean
    ]
    expected = metrics.ssim(noisy, clean)
    # latent_ot computes in float32, scikit-image in float64.
    assert bench.measures.ssim(noisy, clean) == pytest.approx(expected, rel=1e-5)
    assert 0.2 < expected < 0.95


def test_real_fid_is_skipped_without_torch_fidelity(bench, monkeypatch):
    monkeypatch.setattr(bench.measures.importlib.util, "find_spec", lambda name: None)
    assert bench.measures.inception_status() == "torch-fidelity is not installed"


def test_mobilenet_embeddings_see_blur(bench, shared_dir):
    pytest.importorskip("ai_edge_litert")
    embed = bench.measures.MobileNetEmbedding(shared_dir / bench.measures.EMBEDDING_MODEL)
    with Image.open(shared_dir / "images" / "Set14" / "baboon.png") as image:
        sharp = image.convert("RGB").crop((0, 0, 256, 256))
        blurred = sharp.resize((32, 32), Image.Resampling.BICUBIC).resize((256, 256))
    batch = torch.stack(
        [torch.from_numpy(np.array(im)).permute(2, 0, 1) / 255 for im in (sharp, blurred, sharp)]
    )
    features = embed(batch)
    assert features.shape == (3, 1024) and features.dtype == torch.float64
    assert float(features.min()) >= 0.0  # average-pooled ReLU6 activations
    np.testing.assert_array_equal(features[0], features[2])
    assert float((features[0] - features[1]).norm()) > 0.2 * float(features[0].norm())


def test_brisque_scores_noise_as_worse(bench, shared_dir):
    pytest.importorskip("brisque")
    pytest.importorskip("cv2")
    brisque = bench.measures.Brisque()
    with Image.open(shared_dir / "images" / "Set14" / "zebra.png") as image:
        clean = np.asarray(image.convert("RGB"))[:256, :256]
    noise = np.random.default_rng(0).normal(0, 40, clean.shape)
    noisy = np.clip(clean + noise, 0, 255).astype(np.uint8)
    assert brisque(clean) + 20 < brisque(noisy)


# --------------------------------------------------------------------------- command line


def test_alphas_always_hold_both_ends_and_quick_is_smaller(bench, shared_dir):
    quality = bench.quality
    args = quality.parse_args(["--shared", str(shared_dir), "--alphas=-0.5,0.75"])
    assert args.alphas == sorted({-0.5, 0.0, args.default_alpha, 0.75, 1.0})
    quick = quality.parse_args(["--shared", str(shared_dir), "--quick"])
    full = quality.parse_args(["--shared", str(shared_dir)])
    assert len(quick.alphas) < len(full.alphas) and full.alphas == list(quality.ALPHAS)
    assert quick.size < full.size
    # Quick: the built-in prior, the learned tasks first; the full run: every task, both.
    assert quick.natural == "prior" and quick.tasks[0] == "learned_sr_x4"
    assert full.natural == "both" and full.tasks == list(quality.TASKS)
    assert full.split == "validation"
    assert full.default_alpha == quality.LatentOTTransformer().alpha


def test_bad_options_name_themselves(bench, shared_dir, capsys):
    for argv, message in (
        (["--natural", "imagenet"], "--natural: invalid choice: 'imagenet'"),
        (["--crop-size", "4"], "--crop-size must be at least 8 px, got 4"),
        (["--alphas", "a,b"], "or a comma-separated list"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--split", "train"], "--split: invalid choice: 'train'"),
    ):
        with pytest.raises(SystemExit):
            bench.quality.parse_args(["--shared", str(shared_dir), *argv])
        assert message in capsys.readouterr().err


def test_variants_build_and_paper_runs_only_with_cbsd68(bench, shared_dir):
    quality = bench.quality
    args = quality.parse_args(["--shared", str(shared_dir), "--variant", *quality.VARIANTS])
    for variant in quality.VARIANTS:
        operator = quality.make_operator(variant, args)
        assert operator.get_params()["random_state"] == 0
    runs = quality.runs_of(args)
    assert ("paper", "cbsd68") in runs and ("paper", "prior") not in runs
    assert ("default", "prior") in runs


def test_the_shift_variants_are_the_librarys_cycle_spinning(bench, shared_dir):
    quality = bench.quality
    args = quality.parse_args(["--shared", str(shared_dir)])
    for n in (1, 2, 4, 16):
        assert quality.make_operator(f"shifts-{n}", args).shifts == n
    assert not hasattr(quality, "spun_sweep")


def test_the_finest_window_holds_the_texture(bench):
    image = np.full((64, 96, 3), 128, dtype=np.uint8)
    image[32:48, 48:64] = np.indices((16, 16)).sum(0)[..., None] % 2 * 255
    assert bench.figures.finest_window(image, 16, step=16) == (32, 48)
    grid = bench.figures.zoomed_grid({"a": [image[:4, :4]] * 2}, ["x", "y"], zoom=2)
    pixels = np.asarray(grid)
    tile = pixels[14 + 14 : 14 + 14 + 8, 0:8]  # the first tile, under the title and label
    np.testing.assert_array_equal(tile, np.full((8, 8, 3), 128))


def test_collages_come_in_pages_and_the_fine_ones_show_the_default_alpha(bench, tmp_path):
    figures = bench.figures
    count, side = figures.COLLAGE_ROWS + 1, 32
    clean = [np.full((side, side, 3), 10 * k, dtype=np.uint8) for k in range(count)]
    images = bench.tasks.TaskImages([], [], [f"Set5/{k}" for k in range(count)], clean, clean)
    alphas = [0.0, 0.25, 0.5, 1.0]
    outputs = [[np.full_like(image, 40 * k) for image in clean] for k in range(len(alphas))]
    figures.write_collages(outputs, images, alphas, 0.25, tmp_path, collage_crop=16)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "collage_01.png",
        "collage_02.png",
        "fine_01.png",
        "fine_02.png",
    ]
    fine = np.asarray(Image.open(tmp_path / "fine_02.png").convert("RGB"))
    # clean, alpha 1, 0.25 and 0 (not 0.5): four tiles of 2 x 32 px and their gaps; one row.
    assert fine.shape[1] == 4 * (2 * side + 4)
    tiles = [fine[-2 * side - 4 + 1, column * (2 * side + 4) + 1] for column in range(4)]
    assert [int(tile[0]) for tile in tiles] == [40, 120, 40, 0]


def test_a_missing_prior_is_reported_as_such(bench):
    class NoPrior:
        def fit(self, restored, natural=None):
            if natural is None:
                raise ValueError("natural: fit needs natural images as well as restored ones")
            return self

    images = SimpleNamespace(fit_restored=[1], fit_natural=[2])
    assert isinstance(bench.quality.fit_operator(NoPrior(), images, "cbsd68"), NoPrior)
    with pytest.raises(bench.quality.PriorUnavailable, match="no built-in natural prior"):
        bench.quality.fit_operator(NoPrior(), images, "prior")
