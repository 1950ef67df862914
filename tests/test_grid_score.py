"""`latent_ot.metrics.latent_grid_score`: the latent grid's trace in an image's spectrum."""

import numpy as np
import pytest
import skimage.data
import torch

from latent_ot.metrics import latent_grid_score


def _direct_score(rgb: np.ndarray) -> float:
    """The definition, written out: 2-D grey levels, one FFT per line, bins by hand."""
    grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    ratios = []
    for lines in (grey, grey.T):
        length = lines.shape[1]
        spectrum = np.fft.fft(lines - lines.mean(axis=1, keepdims=True), axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).mean(axis=0)[: length // 2 + 1]
        for frequency in (1 / 8, 3 / 8):
            peak = round(frequency * length)
            neighbours = [
                power[b]
                for b in list(range(peak - 12, peak - 2)) + list(range(peak + 3, peak + 13))
                if 1 <= b <= length // 2
            ]
            ratios.append(power[peak] / np.median(neighbours))
    return float(np.mean(ratios))


def _grid(shape: tuple[int, int], period: int = 8) -> np.ndarray:
    """A pattern repeating every ``period`` pixels in both directions, zero mean, +-1."""
    y, x = np.indices(shape)
    tile = np.random.default_rng(5).uniform(-1, 1, (period, period))
    return tile[y % period, x % period]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_clean_photos_score_about_one(name):
    photo = getattr(skimage.data, name)()
    score = latent_grid_score(photo)
    assert 0.7 < score < 1.4


def test_an_eight_pixel_pattern_raises_the_score_and_a_four_pixel_one_does_not():
    photo = skimage.data.astronaut().astype(np.float64)
    clean = latent_grid_score(photo)
    gridded = photo + 3.0 * _grid(photo.shape[:2])[..., None]  # +-3 grey levels
    assert latent_grid_score(gridded) > 3 * clean
    # A 4-pixel period (a x4 restorer's own) has no power at 1/8 or 3/8 cycles per pixel.
    four = photo + 3.0 * _grid(photo.shape[:2], period=4)[..., None]
    assert latent_grid_score(four) == pytest.approx(clean, rel=0.05)
    # The same pattern with another period is caught by that period.
    assert latent_grid_score(four, period=4) > 3 * latent_grid_score(photo, period=4)


@pytest.mark.parametrize("size", [(512, 512), (300, 451)])
def test_the_score_is_the_direct_fft_computation(size):
    rng = np.random.default_rng(1)
    photo = skimage.data.coffee()[: size[0], : size[1]].astype(np.float64)
    image = photo + 2.0 * _grid(photo.shape[:2])[..., None] + rng.normal(0, 1, photo.shape)
    assert latent_grid_score(image) == pytest.approx(_direct_score(image), rel=1e-9)
    # uint8, floats in [0, 1] and a channels-first tensor: the same grey levels, one score.
    pixels = np.clip(image, 0, 255).round().astype(np.uint8)
    expected = latent_grid_score(pixels)
    assert latent_grid_score(pixels / 255.0) == pytest.approx(expected, rel=1e-9)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1) / 255
    assert latent_grid_score(tensor) == pytest.approx(expected, rel=1e-6)


def test_grey_images_are_read_as_they_are():
    grey = skimage.data.camera().astype(np.float64)
    assert latent_grid_score(grey) == pytest.approx(
        latent_grid_score(np.repeat(grey[..., None], 3, axis=-1)), rel=1e-9
    )


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"image: expected H x W or H x W x 3 .* got shape \(4,"):
        latent_grid_score(np.zeros((4, 64, 64)))
    with pytest.raises(ValueError, match=r"at least 8 \* period = 64 px .* got 32 x 100"):
        latent_grid_score(np.zeros((32, 100)))
    with pytest.raises(ValueError, match=r"period: an integer of at least 3 pixels, got 2\.5"):
        latent_grid_score(np.zeros((64, 64)), period=2.5)
