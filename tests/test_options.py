"""The options beyond the paper's recipe, each against what it must do, and the recipe itself
kept bit for bit (LatentOTTransformer.paper)."""

import hashlib

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from latent_ot import GaussianOTTransformer, LatentOTTransformer
from latent_ot.autoencoders import load_autoencoder
from latent_ot.pipeline import gaussian_low_pass, sweep_images
from latent_ot.recipes import PAPER, PAPER_MAP


def recipe_inputs():
    rng = np.random.default_rng(2023)
    natural = [rng.random((40, 48, 3)).astype(np.float32) for _ in range(3)]
    restored = [(0.5 + 0.4 * (im - 0.5)).astype(np.float32) for im in natural[::-1]]
    test = (0.5 + 0.4 * (rng.random((40, 48, 3)) - 0.5)).astype(np.float32)
    return restored, natural, test


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_the_papers_recipe_gives_the_outputs_of_latent_ot_before_the_options_bit_for_bit():
    # Hashes of this sweep computed with latent-ot 639caeb, before any option existed.
    restored, natural, test = recipe_inputs()
    dot = LatentOTTransformer.paper(vae="pixel", random_state=0).fit(restored, natural)
    far, half = dot.sweep(test, [0.0, 0.5])
    assert sha256(far) == "34d01f0502648d29118f1ff49a616ec0869eee8421fcad34cfa9e10f5c994076"
    assert sha256(half) == "491d4c7d058100fc743e6a17c332e93d0d08e1ffece88c213c84fe3d137745a8"
    paper = LatentOTTransformer.paper()
    assert paper.get_params() | PAPER == paper.get_params()
    assert paper.transport.get_params() | PAPER_MAP == paper.transport.get_params()
    assert paper.vae == "sd-vae-ft-mse"


@pytest.fixture(scope="module")
def taef2():
    return load_autoencoder("taef2")


@pytest.fixture(scope="module")
def photo(photos):
    return photos["astronaut"][192:256, 192:256] / 255.0


@pytest.mark.slow
def test_latent_interpolation_walks_from_the_transported_image_to_the_round_trip(taef2, photo):
    pixels = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    round_trip = taef2.decode(taef2.encode(pixels))

    def doubling(vectors):
        return 2 * vectors

    near_one, zero = sweep_images(
        pixels, taef2, doubling, [1 - 1e-7, 0.0], patch_size=1, interpolation="latent"
    )
    assert torch.allclose(near_one, round_trip, atol=1e-4)
    assert torch.allclose(zero, taef2.decode(2 * taef2.encode(pixels)), atol=1e-4)
    (one,) = sweep_images(pixels, taef2, doubling, [1.0], patch_size=1, interpolation="latent")
    assert one is None  # alpha = 1: the caller returns the input itself


@pytest.mark.parametrize("sigma", [0.5, 3.0, 6.0])
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_gaussian_low_pass_is_scipys_gaussian_filter_at_any_size(sigma, dtype, atol):
    # 7 rows: fewer than the kernel's 2 * round(4 sigma) + 1 taps for sigma >= 1
    images = torch.rand(2, 3, 7, 40, generator=torch.Generator().manual_seed(0), dtype=dtype)
    expected = gaussian_filter(images.double().numpy(), (0, 0, sigma, sigma), mode="nearest")
    actual = gaussian_low_pass(images, sigma)
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual.double().numpy(), expected, atol=atol)


def test_low_frequency_sigma_keeps_the_inputs_colours_and_changes_its_detail(photo):
    rng = np.random.default_rng(4)
    natural = [photo, photo[::-1], photo[:, ::-1]]
    restored = [0.15 + 0.5 * image for image in natural]  # darker, duller
    test = 0.15 + 0.5 * np.clip(photo.transpose(1, 0, 2) + 0.05 * rng.random(photo.shape), 0, 1)
    dot = LatentOTTransformer(vae="pixel", alpha=0.0, low_frequency_sigma=None, random_state=0)
    plain = dot.fit(restored, natural).transform(test)
    kept = dot.set_params(low_frequency_sigma=3.0).transform(test)
    mean_colour = lambda image: image.reshape(-1, 3).mean(0)  # noqa: E731
    # The plain map moves the colours to the natural ones; the low-pass keeps the input's...
    assert np.abs(mean_colour(plain) - mean_colour(test)).max() > 0.1
    assert np.abs(mean_colour(kept) - mean_colour(test)).max() < 0.01
    # ...and keeps the plain map's fine detail (a band G * (1 - G) in between is shared).
    detail = lambda image: image - gaussian_filter(image, (1.0, 1.0, 0), mode="nearest")  # noqa: E731
    added = np.abs(detail(plain) - detail(test)).mean()
    assert np.abs(detail(kept) - detail(plain)).mean() < 0.2 * added


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"interpolation": "both"}, ValueError, "interpolation must be one of 'latent', 'pixel'"),
        (
            {"low_frequency_sigma": 0},
            ValueError,
            r"low_frequency_sigma must be None or a number in \(0, 1000\], got 0",
        ),
        ({"low_frequency_sigma": "3"}, TypeError, r"low_frequency_sigma must be None or a number"),
        (
            {"transport": GaussianOTTransformer(noise_scale=1.5)},
            ValueError,
            r"noise_scale must be a number in \[0, 1\], got 1.5",
        ),
        (
            {"transport": GaussianOTTransformer(noise_scale=None)},
            TypeError,
            r"noise_scale must be a number in \[0, 1\], got None",
        ),
        ({"transport": "plain"}, ValueError, "transport must be None or a GaussianOTTransformer"),
    ],
)
def test_bad_options_name_the_parameter(params, error, message):
    images = [np.random.default_rng(0).random((12, 12, 3))]
    with pytest.raises(error, match=message):
        LatentOTTransformer(vae="pixel", **params).fit(images, images)


def test_options_survive_a_file_round_trip(tmp_path):
    restored, natural, test = recipe_inputs()
    params = {"interpolation": "pixel", "transport__rtol": 0.01, "transport__noise_scale": 0.5}
    dot = LatentOTTransformer(vae="pixel", random_state=0, transport=GaussianOTTransformer())
    dot = dot.set_params(**params).fit(restored, natural)
    dot.save(tmp_path / "op.safetensors")
    loaded = LatentOTTransformer.load(tmp_path / "op.safetensors")
    assert {name: loaded.get_params()[name] for name in params} == params
    assert np.array_equal(loaded.transform(test), dot.transform(test))


def nearly_grey_inputs():
    """Grey restored images: their colours vary along R = G = B, and by 1 % across it, so with
    patches of one pixel two of the three directions fall under rtol="auto" (0.05)."""
    rng = np.random.default_rng(4)
    grey = [0.2 + 0.6 * rng.random((40, 40, 1)) for _ in range(4)]
    restored = [np.clip(g + 0.01 * rng.standard_normal((40, 40, 3)), 0, 1) for g in grey]
    natural = [0.2 + 0.6 * rng.random((40, 40, 3)) for _ in range(4)]
    return restored, natural


def test_auto_rtol_drops_the_weak_directions_with_single_pixel_patches():
    restored, natural = nearly_grey_inputs()

    def fit(**params):
        params = {"vae": "pixel", "patch_size": 1, "alpha": 0.0, "random_state": 0, **params}
        return LatentOTTransformer(**params).fit(restored, natural)

    noisy_map = GaussianOTTransformer(rtol=0.05, noise_scale=1.0)
    plain_map = GaussianOTTransformer(rtol=None, noise_scale=0.0)
    default, noisy, plain = fit(), fit(transport=noisy_map), fit(transport=plain_map)
    assert default.gaussian_ot_.rtol == 0.05 and plain.gaussian_ot_.rtol is None
    assert noisy.gaussian_ot_.noise_cov_ is not None and plain.gaussian_ot_.noise_cov_ is None
    # The plain map amplifies the 1 % residue some 20 times; the cut one leaves it out.
    assert np.abs(np.linalg.eigvals(plain.gaussian_ot_.transport_matrix_)).max() > 15
    assert np.abs(np.linalg.eigvals(noisy.gaussian_ot_.transport_matrix_)).max() < 2
    # Both take the outputs to the natural colour covariance (the noise supplies the cut part).
    target = np.cov(np.concatenate([n.reshape(-1, 3) for n in natural]).T)

    def colour_cov(operator):
        return np.cov(np.concatenate([o.reshape(-1, 3) for o in operator.transform(restored)]).T)

    for operator in (noisy, plain):
        assert np.linalg.norm(colour_cov(operator) - target) < 0.05 * np.linalg.norm(target)
    # The default draws no noise: the same map, the cut directions left at the natural mean,
    # so the outputs lack their variance and do not depend on the seed.
    ot = default.gaussian_ot_
    assert ot.noise_cov_ is None
    assert np.array_equal(ot.transport_matrix_, noisy.gaussian_ot_.transport_matrix_)
    short_of_target = target - noisy.gaussian_ot_.noise_cov_
    assert np.linalg.norm(colour_cov(default) - short_of_target) < 0.05 * np.linalg.norm(target)
    assert np.linalg.norm(short_of_target - target) > 0.3 * np.linalg.norm(target)
    first = default.transform(restored)
    reseeded = default.set_params(random_state=1).transform(restored)
    assert all(np.array_equal(a, b) for a, b in zip(first, reseeded, strict=True))
    # Larger patches keep the paper's plain map: the fold would average the noise away.
    assert LatentOTTransformer(vae="pixel").fit(restored, natural).gaussian_ot_.rtol is None
    assert LatentOTTransformer.paper().transport.rtol is None
    assert LatentOTTransformer.paper().transport.noise_scale == 1.0


def test_noise_scale_scales_the_stochastic_maps_noise_and_zero_is_its_mean():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 4))
    x[:, 3] = x[:, 0] - x[:, 1]  # a singular source: the stochastic map
    target = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4))
    full = GaussianOTTransformer(random_state=0).fit(x, target=target)
    half = GaussianOTTransformer(noise_scale=0.5, random_state=0).fit(x, target=target)
    zero = GaussianOTTransformer(noise_scale=0.0, random_state=0).fit(x, target=target)
    assert np.allclose(half.noise_cov_, 0.25 * full.noise_cov_, atol=1e-12)
    for scaled in (half, zero):
        assert np.array_equal(scaled.transport_matrix_, full.transport_matrix_)
    assert zero.noise_cov_ is None
    # Zero gives the stochastic map's mean: the affine part alone, whatever the seed, with
    # the covariance the noise leaves out, T Sigma_s T^T = Sigma_t - Sigma_w.
    y = zero.transform(x)
    expected = full.mean_target_ + (x - full.mean_source_) @ full.transport_matrix_.T
    assert np.allclose(y, expected, atol=1e-10)
    assert np.array_equal(zero.set_params(random_state=1).transform(x), y)
    assert np.allclose(np.cov(y.T), full.cov_target_ - full.noise_cov_, atol=1e-8)
    # A deterministic map has no noise to scale.
    regular = rng.normal(size=(400, 4))
    plain = GaussianOTTransformer().fit(regular, target=target)
    quiet = GaussianOTTransformer(noise_scale=0.0).fit(regular, target=target)
    assert np.array_equal(quiet.transform(regular), plain.transform(regular))
    with pytest.raises(ValueError, match=r"noise_scale must be a number in \[0, 1\], got -1"):
        GaussianOTTransformer(noise_scale=-1).fit(x, target=target)
