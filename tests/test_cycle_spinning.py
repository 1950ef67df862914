"""Cycle spinning: outputs of shifted copies averaged, and the latent grid's pattern cancelled."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from photos import load_photo

from latent_ot import LatentOTTransformer
from latent_ot.autoencoders import Autoencoder
from latent_ot.metrics import latent_grid_score
from latent_ot.pipeline import grid_shifts, sweep_images


class GridPaintingAutoencoder(Autoencoder):
    """Latents are 8 x 8 block means; decoding upsamples them and paints a faint pattern of
    period 8 (odd harmonics only) onto the latent grid, as a small decoder does."""

    def __init__(self):
        super().__init__(factor=8, latent_channels=3, name="grid-painter")

    def _default_tile_overlap(self, tile_size: int) -> int:
        return 0

    def _encode(self, images, generator):
        return F.avg_pool2d(images, 8)

    def _decode(self, latents):
        smooth = F.interpolate(latents, scale_factor=8, mode="bilinear", align_corners=False)
        height, width = smooth.shape[-2:]
        rows = torch.arange(height, dtype=smooth.dtype)[:, None]
        columns = torch.arange(width, dtype=smooth.dtype)[None, :]
        pattern = torch.cos(2 * math.pi * rows / 8) + torch.cos(2 * math.pi * columns / 8)
        return smooth + 0.02 * pattern


@pytest.fixture(scope="module")
def photo():
    pixels = load_photo("coffee")[:256, :256].astype(np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def identity(vectors):
    return vectors


def test_grid_shifts_are_distinct_fractions_of_the_latent_grid():
    assert grid_shifts(1, 8) == ((0, 0),)
    assert grid_shifts(16, 8) == tuple((y, x) for y in (0, 2, 4, 6) for x in (0, 2, 4, 6))
    assert grid_shifts(4, 2) == ((0, 0), (0, 1), (1, 0), (1, 1))
    with pytest.raises(ValueError, match=r"shifts must be one of 1, 2, 4, 16, got 3"):
        grid_shifts(3, 8)


@pytest.mark.parametrize("count", [2, 4, 16])
def test_spinning_is_the_mean_of_the_shifted_copies_shifted_back(photo, count):
    ae = GridPaintingAutoencoder()
    alphas = [0.0, 0.5]
    spun = sweep_images(
        photo,
        ae,
        identity,
        alphas,
        patch_size=1,
        interpolation="latent",
        shifts=grid_shifts(count, 8),
    )
    expected = [torch.zeros_like(photo) for _ in alphas]
    for down, right in grid_shifts(count, 8):
        shifted = np.pad(photo.numpy(), [(0, 0), (0, 0), (down, 0), (right, 0)], mode="reflect")
        copy = sweep_images(
            torch.from_numpy(shifted), ae, identity, alphas, patch_size=1, interpolation="latent"
        )
        for total, image in zip(expected, copy, strict=True):
            total += image[..., down : down + 256, right : right + 256] / count
    for actual, wanted in zip(spun, expected, strict=True):
        torch.testing.assert_close(actual, wanted, atol=1e-6, rtol=0)


@pytest.mark.parametrize("count", [2, 4])
def test_spinning_cancels_the_pattern_the_decoder_paints_on_the_latent_grid(photo, count):
    ae = GridPaintingAutoencoder()
    once, spun = (
        sweep_images(photo, ae, identity, [0.0], patch_size=1, shifts=grid_shifts(n, 8))[0][0]
        for n in (1, count)
    )
    clean = latent_grid_score(photo[0])
    assert latent_grid_score(once) > clean + 1  # the painted pattern shows ...
    assert latent_grid_score(spun) < clean + 0.1  # ... and the shifted copies cancel it


def test_the_estimator_spins_and_one_shift_is_the_image_as_it_is(photo):
    image = photo[0].permute(1, 2, 0).numpy()
    dot = LatentOTTransformer(vae=GridPaintingAutoencoder(), patch_size=1, random_state=0)
    dot.fit([image], [image**0.8])
    plain = dot.transform(image)
    spun = dot.set_params(shifts=4).transform(image)
    assert latent_grid_score(spun) < latent_grid_score(plain) - 1
    assert np.array_equal(dot.set_params(shifts=1).transform(image), plain)
    with pytest.raises(ValueError, match=r"shifts must be one of 1, 2, 4, 16, got 8"):
        dot.set_params(shifts=8).transform(image)
