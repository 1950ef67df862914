"""The degrade-and-restore tasks of the apps layer, and the errors of missing optional packages."""

import io
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.restoration import denoise_nl_means

from latent_ot._optional import MissingExtraError, install_command, require
from latent_ot.apps import reports
from latent_ot.apps.demo_data import sample_photos
from latent_ot.apps.restoration import (
    TASKS,
    add_noise,
    degrade_and_restore,
    denoising,
    image_rng,
    jpeg,
    non_local_means,
    super_resolution,
    to_uint8,
)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "astronaut": np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 48))),
        "coffee": np.asarray(Image.fromarray(skimage.data.coffee()).resize((64, 48))),
    }


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_is_seeded_by_the_seed_and_the_name_only(name, photos):
    task = TASKS[name]
    degraded, restored = degrade_and_restore(task, photos, seed=3)
    again, restored_again = degrade_and_restore(task, photos, seed=3)
    alone, _ = degrade_and_restore(task, {"coffee": photos["coffee"]}, seed=3)
    for key in photos:
        assert np.array_equal(degraded[key], again[key])
        assert np.array_equal(restored[key], restored_again[key])
        assert restored[key].shape == photos[key].shape
        assert restored[key].dtype == np.float32
        assert 0.0 <= restored[key].min() and restored[key].max() <= 1.0
    # An image's draw does not depend on which other images the run holds.
    assert np.array_equal(alone["coffee"], degraded["coffee"])


def test_noise_has_the_stated_level_and_other_seeds_draw_other_noise(photos):
    clean = {"grey": np.full((64, 64, 3), 0.5, dtype=np.float32)}
    noisy, _ = degrade_and_restore(denoising(50 / 255), clean, seed=0)
    other, _ = degrade_and_restore(denoising(50 / 255), clean, seed=1)
    assert noisy["grey"].std() == pytest.approx(50 / 255, rel=0.03)
    assert noisy["grey"].min() < 0.0  # unclipped, as the denoiser's model assumes
    assert not np.array_equal(noisy["grey"], other["grey"])


def test_denoising_is_scikit_image_non_local_means_of_the_noisy_image(photos):
    clean = photos["astronaut"]
    noisy, denoised = denoising(0.1).degrade_and_restore(clean, image_rng(0, "astronaut"))
    expected = denoise_nl_means(
        noisy, h=0.08, sigma=0.1, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
    )
    np.testing.assert_allclose(denoised, np.clip(expected, 0, 1), atol=1e-6)
    noise_error = np.abs(noisy - clean / 255).mean()
    assert np.abs(denoised - clean / 255).mean() < noise_error


def test_super_resolution_is_pillow_bicubic_down_and_up(photos):
    clean = photos["coffee"]
    low, restored = super_resolution(4).degrade_and_restore(clean, image_rng(0, "coffee"))
    reference_low = Image.fromarray(clean).resize((16, 12), Image.Resampling.BICUBIC)
    reference = reference_low.resize((64, 48), Image.Resampling.BICUBIC)
    assert np.array_equal(to_uint8(low), np.asarray(reference_low))
    assert np.array_equal(to_uint8(restored), np.asarray(reference))


def test_jpeg_restored_image_is_the_decoded_jpeg(photos):
    clean = photos["coffee"]
    measured, restored = jpeg(10).degrade_and_restore(clean, image_rng(0, "coffee"))
    buffer = io.BytesIO()
    Image.fromarray(clean).save(buffer, "JPEG", quality=10)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(to_uint8(restored), decoded)
    assert np.array_equal(measured, restored)


def test_float_and_uint8_inputs_give_the_same_images(photos):
    clean = photos["astronaut"]
    rng = np.random.default_rng(0)
    as_uint8 = add_noise(clean, 0.1, rng)
    as_float = add_noise(clean.astype(np.float32) / 255, 0.1, np.random.default_rng(0))
    assert np.array_equal(as_uint8, as_float)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        image_rng(-1, "a")
    with pytest.raises(TypeError, match="task must be a RestorationTask, got str"):
        degrade_and_restore("denoising", {}, seed=0)
    with pytest.raises(TypeError, match="image must be uint8 or float in \\[0, 1\\], got dtype"):
        add_noise(np.zeros((2, 2, 3), dtype=np.int64), 0.1, np.random.default_rng(0))


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.restoration", None)  # makes the import fail
    with pytest.raises(MissingExtraError) as caught:
        non_local_means(np.zeros((8, 8, 3)), 0.1)
    assert str(caught.value) == (
        'non-local means denoising needs scikit-image: pip install "latent-ot[demo]"'
    )
    assert caught.value.package == "scikit-image" and caught.value.extra == "demo"
    assert isinstance(caught.value, ImportError)


def test_figures_without_matplotlib_name_the_plots_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    rows = [{"alpha": 0.0, "psnr": 20.0, "fid": 3.0}, {"alpha": 1.0, "psnr": 25.0, "fid": 5.0}]
    with pytest.raises(
        MissingExtraError,
        match=r'^drawing figures needs matplotlib: pip install "latent-ot\[plots\]"$',
    ):
        reports.plot_perception_distortion(rows)
    assert reports.markdown_table(rows).startswith("| alpha |")  # tables need nothing more


def test_sample_photos_without_scikit_image_name_the_demo_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(MissingExtraError, match=r"^the demo needs scikit-image: pip install"):
        sample_photos(1, size=8)


def test_require_returns_the_module_and_refuses_an_unknown_extra():
    assert require("json", extra="plots", purpose="x").loads("[1]") == [1]
    assert install_command("demo") == 'pip install "latent-ot[demo]"'
    with pytest.raises(
        ValueError, match="extra must be one of 'plots', 'metrics', 'demo', got 'x'"
    ):
        require("json", extra="x", purpose="x")
