"""LatentOTTransformer end to end: real pretrained weights, one implementation of the math,
the loading path users take, every input kind, scikit-learn integration, bad input."""

import copy
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from photos import photo_crops
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from latent_ot import GaussianOTTransformer, GaussianStats, LatentOTTransformer
from latent_ot.autoencoders import MODELS_DIR_ENV, load_autoencoder
from latent_ot.exceptions import (
    FitWarning,
    ImageReadError,
    IncompatibleAutoencoderError,
    OperatorFileError,
)
from latent_ot.gaussian import w2_distance
from latent_ot.patches import extract_patches, fold_patches, iter_patch_chunks
from latent_ot.pipeline import pad_to_multiple
from latent_ot.priors import builtin_prior
from latent_ot.recipes import DEFAULT, PAPER_MAP, auto_map, auto_patch_size
from latent_ot.serialization import read_operator, write_operator

pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")


def random_images(seed: int, sizes, *, contrast: float = 1.0) -> list[np.ndarray]:
    """Smooth-ish random float images in [0, 1] (H x W x 3)."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in sizes:
        base = rng.random((height, width, 3))
        smooth = (base + np.roll(base, 1, axis=0) + np.roll(base, 1, axis=1)) / 3
        images.append(np.clip(0.5 + contrast * (smooth - 0.5), 0, 1))
    return images


@pytest.fixture
def pixel_fit():
    restored = random_images(0, [(24, 24)] * 3, contrast=0.5)
    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    dot = LatentOTTransformer(vae="pixel", alpha=0.0, random_state=0)
    return dot.fit(restored, natural), restored


# -- one implementation of the math --------------------------------------------------------------


def test_patch_map_equals_gaussian_ot_fitted_on_the_same_patch_vectors(pixel_fit):
    dot, restored = pixel_fit
    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    # The estimator works on float32 pixels; so does the reference.
    as_latents = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # noqa: E731
    reference = GaussianOTTransformer().fit(
        extract_patches(as_latents(restored), 3).numpy(),
        target=extract_patches(as_latents(natural), 3).numpy(),
    )
    np.testing.assert_allclose(
        dot.gaussian_ot_.transport_matrix_, reference.transport_matrix_, rtol=1e-9, atol=1e-12
    )
    assert dot.w2_ == pytest.approx(reference.w2_, rel=1e-9)

    # With the identity autoencoder, transform = replicate pad, map every patch, average back,
    # decode (clamp), then take the band under the low-pass from the input (scipy's filter).
    image = as_latents(restored[:1]).double()
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), mode="replicate")
    mapped = reference.transform(extract_patches(padded, 3).numpy())
    folded = fold_patches(torch.from_numpy(mapped), (26, 26), 3)[..., 1:-1, 1:-1].numpy()
    folded = folded.clip(0, 1)
    sigma = dot.low_frequency_sigma
    kept = folded + gaussian_filter(image.numpy() - folded, (0, 0, sigma, sigma), mode="nearest")
    as_image = lambda array: array.clip(0, 1)[0].transpose(1, 2, 0)  # noqa: E731
    np.testing.assert_allclose(dot.transform(restored[0]), as_image(kept), atol=1e-6)
    plain = dot.set_params(low_frequency_sigma=None).transform(restored[0])
    np.testing.assert_allclose(plain, as_image(folded), atol=1e-6)


def test_transported_patches_take_the_natural_statistics():
    # Pixel space, where "re-encoding" is exact: the output's patch covariance moves to the target.
    restored = random_images(2, [(40, 40)] * 4, contrast=0.4)
    natural = random_images(3, [(40, 40)] * 4, contrast=1.0)
    dot = LatentOTTransformer(vae="pixel", patch_size=2).fit(restored, natural)
    out = [dot.transform(image) for image in restored]
    stats = lambda images: GaussianStats.from_samples(  # noqa: E731
        extract_patches(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), 2)
    )
    target = dot.natural_stats_
    before = w2_distance(
        stats(restored).mean, stats(restored).covariance, target.mean, target.covariance
    )
    after = w2_distance(stats(out).mean, stats(out).covariance, target.mean, target.covariance)
    assert float(after) < 0.35 * float(before)


# -- real pretrained weights -----------------------------------------------------------------------


def nlm_restored(clean: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian noise sigma = 50 removed by non-local means (the paper's NLM row)."""
    from skimage.restoration import denoise_nl_means

    sigma = 50 / 255
    noisy = clean + np.random.default_rng(seed).normal(0, sigma, clean.shape)
    denoised = denoise_nl_means(
        noisy,
        h=0.8 * sigma,
        sigma=sigma,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1,
        fast_mode=True,
    )
    return np.clip(denoised, 0, 1)


def patch_stats(autoencoder, images, patch_size: int) -> GaussianStats:
    stats = None
    for image in images:
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        latents = autoencoder.encode(pad_to_multiple(pixels, autoencoder.factor))
        for chunk in iter_patch_chunks(latents, patch_size, max_patches=8192):
            stats = stats or GaussianStats(chunk.shape[1])
            stats.update(chunk)
    return stats


@pytest.mark.slow
@pytest.mark.parametrize(("patch_size", "resolved"), [("auto", 1), (3, 3)])
def test_taef2_transport_closes_the_gap_to_natural_statistics(taef2_dir, patch_size, resolved):
    clean = photo_crops(128, 26)
    restored_train = [nlm_restored(image, seed) for seed, image in enumerate(clean[:10])]
    natural_train = clean[10:20]
    held_out_clean = clean[20:26]
    held_out = [nlm_restored(image, 100 + seed) for seed, image in enumerate(held_out_clean)]

    dot = LatentOTTransformer(vae=taef2_dir, patch_size=patch_size, device="cpu", random_state=0)
    dot.fit(restored_train, natural_train)
    transported = dot.transform(held_out)
    assert [t.shape for t in transported] == [h.shape for h in held_out]
    assert dot.patch_size_ == resolved  # "auto" is 1 for TAEF2's 32 channels
    assert dot.gaussian_ot_.rtol == (0.05 if resolved == 1 else None)  # rtol="auto"

    autoencoder = load_autoencoder(taef2_dir)
    target = dot.natural_stats_

    def distance(images) -> float:
        stats = patch_stats(autoencoder, images, dot.patch_size_)
        return float(w2_distance(stats.mean, stats.covariance, target.mean, target.covariance))

    before, after, floor = distance(held_out), distance(transported), distance(held_out_clean)
    closed = (before - after) / (before - floor)
    print(f"W2 before {before:.2f}, after {after:.2f}, floor {floor:.2f}, closed {closed:.0%}")
    assert closed >= 0.7, f"W2 before {before:.2f}, after {after:.2f}, floor {floor:.2f}"


# -- the loading path users take, every input kind -------------------------------------------------


@pytest.fixture
def hub_id_fit(tiny_models_dir, monkeypatch):
    """Fitted through the hub id, found in the local models directory like a user's copy."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tiny_models_dir))
    restored = random_images(4, [(40, 48), (37, 53), (40, 48)], contrast=0.6)
    natural = random_images(5, [(64, 64), (50, 30)])
    dot = LatentOTTransformer(vae="stabilityai/sd-vae-ft-mse", batch_size=2, random_state=0)
    return dot.fit(restored, natural)


SIZES = [(37, 53), (300, 200), (64, 64), (41, 40)]


def test_hub_id_through_models_dir_handles_mixed_sizes(hub_id_fit):
    assert (hub_id_fit.latent_channels_, hub_id_fit.factor_) == (4, 2)
    assert hub_id_fit.n_images_restored_ == 3 and hub_id_fit.n_images_natural_ == 2
    images = random_images(6, SIZES)
    out = hub_id_fit.transform(images)
    assert isinstance(out, list) and [o.shape for o in out] == [i.shape for i in images]
    assert all(o.dtype == np.float64 for o in out)
    # Batching groups images of equal size; the result does not depend on it.
    one_by_one = [hub_id_fit.transform(image) for image in images]
    for batched, single in zip(out, one_by_one, strict=True):
        np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: Image.fromarray((a * 255).astype(np.uint8)), id="pil-rgb"),
        pytest.param(lambda a: Image.fromarray((a[..., 0] * 255).astype(np.uint8)), id="pil-gray"),
        pytest.param(lambda a: (a * 255).astype(np.uint8), id="numpy-uint8"),
        pytest.param(lambda a: (a * 65535).astype(np.uint16), id="numpy-uint16"),
        pytest.param(lambda a: a.astype(np.float32), id="numpy-float32"),
        pytest.param(lambda a: a[..., 0].astype(np.float32), id="numpy-gray"),
        pytest.param(lambda a: torch.from_numpy(a).permute(2, 0, 1).float(), id="tensor"),
    ],
)
def test_every_input_kind_comes_back_in_its_own_kind_and_size(hub_id_fit, make):
    for height, width in SIZES:
        image = make(random_images(7, [(height, width)])[0])
        out = hub_id_fit.transform(image)
        assert type(out) is type(image)
        if isinstance(image, Image.Image):
            assert (out.mode, out.size) == (image.mode, image.size)
        else:
            assert (out.shape, out.dtype) == (image.shape, image.dtype)
        assert hub_id_fit.interpolate(1.0).transform(image) is not image


def test_files_directories_and_batches(hub_id_fit, tmp_path):
    images = random_images(8, [(40, 40), (33, 47)])
    for index, image in enumerate(images):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"{index}.png")
    from_dir = hub_id_fit.transform(tmp_path)
    from_paths = hub_id_fit.transform([tmp_path / "0.png", str(tmp_path / "1.png")])
    assert [im.size for im in from_dir] == [(40, 40), (47, 33)]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(from_dir, from_paths, strict=True)
    )
    batch = torch.rand(3, 3, 24, 30, generator=torch.Generator().manual_seed(0))
    out = hub_id_fit.transform(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    array_batch = (np.random.default_rng(0).random((2, 24, 30, 3)) * 255).astype(np.uint8)
    assert hub_id_fit.transform(array_batch).shape == array_batch.shape


def test_alpha_one_returns_the_input_bitwise(hub_id_fit):
    image = (np.random.default_rng(9).random((37, 53, 3)) * 65535).astype(np.uint16)
    assert np.array_equal(hub_id_fit.interpolate(1.0).transform(image), image)
    tensor = torch.rand(3, 37, 53, dtype=torch.float64)
    assert torch.equal(hub_id_fit.interpolate(1.0).transform(tensor), tensor)


def test_alpha_blends_in_pixel_space_and_sweep_reuses_the_transport(hub_id_fit):
    image = random_images(10, [(32, 32)])[0].astype(np.float32)
    # A copy, without the low-pass, whose unclipped output the blend would hide.
    pixel = hub_id_fit.interpolate(0.0).set_params(interpolation="pixel", low_frequency_sigma=None)
    transported = pixel.transform(image)
    half = pixel.interpolate(0.5).transform(image)
    np.testing.assert_allclose(half, np.clip(0.5 * transported + 0.5 * image, 0, 1), atol=1e-6)
    swept = pixel.sweep(image, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(swept[0], transported)
    np.testing.assert_array_equal(swept[1], half)
    np.testing.assert_array_equal(swept[2], image)


def test_sweep_hands_each_inputs_latents_as_measuring_would_encode_them(hub_id_fit):
    images = random_images(13, [(37, 53), (37, 53), (40, 48)])
    autoencoder = load_autoencoder(hub_id_fit.vae)
    encoded = {}
    for shifts in (1, 2):
        encoded.clear()
        operator = hub_id_fit.interpolate(0.0).set_params(shifts=shifts, batch_size=2)
        operator.sweep(images, [0.0, 1.0], on_encoded=encoded.__setitem__)
        assert sorted(encoded) == [0, 1, 2]  # one call per image, unshifted, in input order
        for index, image in enumerate(images):
            pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
            expected = autoencoder.encode(pad_to_multiple(pixels, autoencoder.factor))
            # (batched with another image: float rounding may differ)
            torch.testing.assert_close(encoded[index], expected, rtol=1e-5, atol=1e-5)
    encoded.clear()
    hub_id_fit.sweep(images, [1.0], on_encoded=encoded.__setitem__)
    assert encoded == {}  # nothing to transport, nothing encoded


def test_same_random_state_gives_the_same_output(tiny_models_dir):
    restored = random_images(11, [(32, 32)] * 2)
    natural = random_images(12, [(32, 32)] * 2)
    vae = tiny_models_dir / "sd-vae-ft-mse"
    noisy = GaussianOTTransformer(stochastic="always")
    make = lambda seed: LatentOTTransformer(vae=vae, transport=noisy, random_state=seed).fit(  # noqa: E731
        restored, natural
    )
    first, second, other = make(3), make(3), make(4)
    assert first.gaussian_ot_.noise_cov_ is not None
    assert np.array_equal(first.transform(restored[0]), first.transform(restored[0]))
    assert np.array_equal(first.transform(restored[0]), second.transform(restored[0]))
    assert not np.array_equal(first.transform(restored[0]), other.transform(restored[0]))


def test_nothing_is_printed_unless_verbose(tiny_models_dir, capfd, recwarn):
    # float16: the model is also cast to another dtype on loading (not bfloat16, whose
    # attention on the CPU needs AVX-512 in torch).
    vae = tiny_models_dir / "sd-vae-ft-mse"
    restored = random_images(13, [(32, 32)] * 3)
    natural = random_images(14, [(32, 32), (24, 40)])
    dot = LatentOTTransformer(vae=load_autoencoder(vae, dtype="float16"), batch_size=2)
    dot.fit(restored, natural).transform(restored)
    dot.sweep(restored[0], [0.0, 0.5])
    assert capfd.readouterr() == ("", "")
    assert [str(warning.message) for warning in recwarn] == []

    dot.set_params(verbose=True).fit(restored, natural).transform(restored)
    printed = capfd.readouterr()
    assert printed.out == ""
    for bar in ("encoding restored", "encoding natural", "transporting"):
        assert bar in printed.err


# -- scikit-learn integration ----------------------------------------------------------------------


def test_joblib_round_trip_stores_how_to_load_the_autoencoder_not_its_weights(hub_id_fit, tmp_path):
    image = random_images(13, [(37, 53)])[0]
    expected = hub_id_fit.transform(image)
    live, live_transport = dict(hub_id_fit.__dict__), dict(hub_id_fit.gaussian_ot_.__dict__)
    joblib.dump(hub_id_fit, tmp_path / "dot.joblib")
    assert "_autoencoder_cache" not in pickle.loads(pickle.dumps(hub_id_fit)).__dict__
    # Pickling leaves the operator itself alone: its loaded autoencoder, its map cache, its
    # statistics where they are.
    assert "_autoencoder_cache" in live and hub_id_fit.gaussian_ot_._map_cache
    for before, after in ((live, hub_id_fit), (live_transport, hub_id_fit.gaussian_ot_)):
        assert before.keys() == after.__dict__.keys()
        assert all(after.__dict__[name] is value for name, value in before.items())
    assert (tmp_path / "dot.joblib").stat().st_size < 200_000  # statistics, no weights
    loaded = joblib.load(tmp_path / "dot.joblib")
    assert np.array_equal(loaded.transform(image), expected)


def test_an_autoencoder_instance_is_pickled_with_its_weights(tiny_kl_model, tmp_path):
    restored, natural = random_images(14, [(32, 32)] * 2), random_images(15, [(32, 32)] * 2)
    dot = LatentOTTransformer(vae=tiny_kl_model).fit(restored, natural)
    joblib.dump(dot, tmp_path / "dot.joblib")
    loaded = joblib.load(tmp_path / "dot.joblib")
    assert np.array_equal(loaded.transform(restored[0]), dot.transform(restored[0]))


def test_clone_params_pipeline_and_not_fitted(pixel_fit):
    dot, restored = pixel_fit
    params = dot.get_params()
    assert params["vae"] == "pixel" and params["patch_size"] == "auto"
    assert dot.patch_size_ == 3 and dot.patch_dim_ == 27  # "auto" for 3 channels
    copy = clone(dot).set_params(patch_size=2, alpha=0.5)
    assert copy.patch_size == 2 and copy.alpha == 0.5 and not hasattr(copy, "gaussian_ot_")
    with pytest.raises(NotFittedError):
        copy.transform(restored[0])

    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    to_float32 = FunctionTransformer(lambda images: [np.float32(image) for image in images])
    pipeline = Pipeline(
        [("cast", to_float32), ("dot", LatentOTTransformer(vae="pixel", alpha=0.0, random_state=0))]
    )
    pipeline.fit(restored, natural)
    np.testing.assert_allclose(
        pipeline.transform(restored)[0], dot.transform(np.float32(restored[0])), atol=1e-6
    )


def test_partial_fit_streams_either_side_and_equals_fit(pixel_fit):
    dot, restored = pixel_fit
    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    streamed = LatentOTTransformer(vae="pixel", random_state=0)
    streamed.partial_fit(restored=restored[:2])
    streamed.partial_fit(natural=natural[:1])
    streamed.partial_fit(restored=restored[2:], natural=natural[1:])
    np.testing.assert_allclose(
        streamed.gaussian_ot_.transport_matrix_, dot.gaussian_ot_.transport_matrix_, rtol=1e-9
    )


def test_a_failing_batch_leaves_the_statistics_as_they_were(pixel_fit, tmp_path):
    dot, restored = pixel_fit
    before = dot.restored_stats_.copy()
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        dot.partial_fit(restored=[restored[0], broken])
    assert dot.restored_stats_ == before
    dot.partial_fit(restored=[restored[0]])
    assert dot.restored_stats_.count > before.count


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_names_the_argument(pixel_fit, tiny_models_dir, tmp_path):
    dot, restored = pixel_fit
    natural = random_images(1, [(20, 28)] * 2)
    fresh = LatentOTTransformer(vae="pixel")
    with pytest.raises(ValueError, match="restored is empty"):
        fresh.fit([], natural)
    with pytest.raises(ValueError, match="natural is empty"):
        fresh.fit(restored, [])
    # Without natural images the prior is the natural side; "pixel" has none, and says how.
    with pytest.raises(ValueError, match=r"natural: no natural images.*no built-in.*build_prior"):
        fresh.fit(restored)
    nan_image = restored[0].copy()
    nan_image[3, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"restored\[1\].*NaN"):
        fresh.fit([restored[0], nan_image], natural)
    with pytest.raises(ValueError, match=r"images.*5 channels"):
        dot.transform(np.zeros((8, 8, 5)))
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        dot.transform(text_file)
    # Smaller than the autoencoder's factor, and smaller than a patch at fit time.
    kl = LatentOTTransformer(vae=tiny_models_dir / "sd-vae-ft-mse")
    with pytest.raises(ValueError, match=r"restored\[0\].*1 x 1 px.*at least 2 x 2"):
        kl.fit([np.zeros((1, 1, 3))], natural)
    with pytest.raises(
        ValueError, match=r"restored\[0\].*smaller than patch_size=3.*at least 6 x 6"
    ):
        kl.fit([np.zeros((4, 4, 3))], natural)
    with pytest.raises(ValueError, match="patch_size must be an int"):
        LatentOTTransformer(vae="pixel", patch_size=0).fit(restored, natural)
    with pytest.raises(ValueError, match="patch_size must be an int >= 1 or 'auto', got 'big'"):
        LatentOTTransformer(vae="pixel", patch_size="big").fit(restored, natural)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[-10, 10\], got nan"):
        dot.interpolate(float("nan"))


def test_a_fitted_operator_refuses_another_autoencoder(pixel_fit, tiny_models_dir):
    dot, restored = pixel_fit
    dot.set_params(vae=tiny_models_dir / "sd-vae-ft-mse")
    with pytest.raises(
        IncompatibleAutoencoderError,
        match=r"vae: .*3 channels and factor 1.*4 channels and factor 2",
    ):
        dot.transform(restored[0])
    dot.set_params(vae="pixel", patch_size=3)  # what "auto" resolved to: the same operator
    assert np.array_equal(
        dot.transform(restored[0]), dot.set_params(patch_size="auto").transform(restored[0])
    )
    dot.set_params(vae="pixel", patch_size=5)
    with pytest.raises(
        IncompatibleAutoencoderError, match=r"patch_size: .*patches of side 3.*patch_size=5 gives 5"
    ):
        dot.transform(restored[0])


def test_save_and_load_a_safe_operator_file(hub_id_fit, tmp_path, tiny_kl_model):
    image = random_images(16, [(37, 53)])[0]
    hub_id_fit.save(tmp_path / "dot.safetensors")
    loaded = LatentOTTransformer.load(tmp_path / "dot.safetensors")
    assert loaded.get_params() == hub_id_fit.get_params()
    assert np.array_equal(loaded.transform(image), hub_id_fit.transform(image))
    assert loaded.restored_stats_ == hub_id_fit.restored_stats_
    assert loaded.n_images_natural_ == hub_id_fit.n_images_natural_
    assert loaded.patch_size_ == hub_id_fit.patch_size_ == 3  # "auto" for 4 channels
    with pytest.raises(OperatorFileError, match="GaussianOTTransformer"):
        GaussianOTTransformer.load(tmp_path / "dot.safetensors")
    by_instance = LatentOTTransformer(vae=tiny_kl_model).fit([image], [image])
    with pytest.raises(TypeError, match=r"vae: a AutoencoderKL.*joblib"):
        by_instance.save(tmp_path / "instance.safetensors")


@pytest.mark.parametrize(
    "change",
    [
        lambda params: params.pop("low_frequency_sigma"),  # a parameter this version has
        lambda params: params.update(residual=False),  # one it no longer has
        lambda params: params["transport"].update(shrinkage=0.0),  # in the nested map
    ],
)
def test_a_file_written_by_another_version_is_refused(hub_id_fit, tmp_path, change):
    hub_id_fit.set_params(transport=GaussianOTTransformer()).save(tmp_path / "dot.safetensors")
    hub_id_fit.set_params(transport=None)
    tensors, metadata = read_operator(tmp_path / "dot.safetensors")
    metadata = {
        k: v for k, v in metadata.items() if k not in ("format_version", "latent_ot_version")
    }
    change(metadata["params"])
    write_operator(tmp_path / "other.safetensors", tensors, metadata)
    with pytest.raises(OperatorFileError, match="written by another version of latent-ot"):
        LatentOTTransformer.load(tmp_path / "other.safetensors")


def test_tile_size_reaches_the_autoencoder_and_tiling_is_seamless(taef2_dir):
    restored = random_images(17, [(64, 64)] * 2, contrast=0.6)
    natural = random_images(18, [(64, 64)] * 2)
    vae = taef2_dir
    untiled_vae = load_autoencoder(vae, tile_size=None)
    dot = LatentOTTransformer(vae=untiled_vae, device="cpu", random_state=0)
    dot.fit(restored, natural)
    image = random_images(19, [(320, 384)])[0]
    untiled = dot.transform(image)
    dot.set_params(vae=load_autoencoder(vae, tile_size=256))  # default overlap: 128 px
    assert dot._autoencoder().tile_size == 256
    assert np.abs(dot.transform(image) - untiled).mean() < 1e-3


# -- the parameters: recipes, the nested map, checks at fit, atomic fit -------------------------


def test_the_defaults_are_the_default_recipe_and_auto_follows_its_rules():
    assert LatentOTTransformer().get_params(deep=False) | dict(DEFAULT) == (
        LatentOTTransformer().get_params(deep=False)
    )
    assert [auto_patch_size(c) for c in (3, 4, 15, 16, 32)] == [3, 3, 3, 1, 1]
    assert auto_map(1) == {"stochastic": "auto", "rtol": 0.05, "noise_scale": 0.0}
    assert auto_map(3) == dict(PAPER_MAP)


def test_the_map_is_a_nested_estimator_cloned_at_fit(pixel_fit):
    _, restored = pixel_fit
    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    transport = GaussianOTTransformer(rtol=0.2, noise_scale=0.0, alpha=0.7, random_state=9)
    dot = LatentOTTransformer(vae="pixel", transport=transport, random_state=4)
    params = dot.set_params(transport__rtol=0.1).get_params(deep=True)
    assert params["transport__rtol"] == 0.1 and params["transport__noise_scale"] == 0.0
    dot.fit(restored, natural)
    fitted = dot.gaussian_ot_
    assert fitted is not transport and not hasattr(transport, "w2_")  # cloned, left unfitted
    assert (fitted.rtol, fitted.alpha, fitted.random_state) == (0.1, 0.0, 4)
    # None: the recipe's map for the fitted patch size (3 for the pixel autoencoder)
    auto = LatentOTTransformer(vae="pixel").fit(restored, natural).gaussian_ot_
    assert {name: auto.get_params()[name] for name in PAPER_MAP} == dict(PAPER_MAP)


RANDOM_STATE_MESSAGE = (
    r"random_state must be None, an int in \[0, 4294967295\], a RandomState or a Generator, got "
)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"random_state": 1.5}, RANDOM_STATE_MESSAGE + "1.5"),
        ({"random_state": 2**64}, RANDOM_STATE_MESSAGE + "18446744073709551616"),
        ({"random_state": "seed"}, RANDOM_STATE_MESSAGE + "'seed'"),
        ({"alpha": 1e308}, r"alpha must be a number in \[-10, 10\], got 1e\+308"),
        ({"alpha": float("nan")}, r"alpha must be a number in \[-10, 10\], got nan"),
        ({"low_frequency_sigma": 1e5}, r"low_frequency_sigma must be None or a number in \(0, "),
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
        ({"verbose": 1}, r"verbose must be a bool, got 1"),
        ({"prior": 3}, r"prior must be a str, a PathLike or a NaturalPrior, got 3"),
        (
            {"vae": 3},
            "vae must be a str, a PathLike or an object implementing 'encode' and 'decode'",
        ),
    ],
)
def test_every_parameter_is_checked_at_fit_and_named(params, message):
    images = random_images(2, [(12, 12)])
    with pytest.raises(ValueError, match=message):
        LatentOTTransformer(**{"vae": "pixel", **params}).fit(images, images)


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="a torch build without CUDA")
def test_a_cuda_device_without_cuda_is_named():
    images = random_images(2, [(12, 12)])
    with pytest.raises(ValueError, match=r"device='cuda' but this torch build has no CUDA"):
        LatentOTTransformer(vae="pixel", device="cuda").fit(images, images)


def test_random_state_accepts_numpys_generators():
    restored, natural = random_images(3, [(16, 16)] * 2), random_images(4, [(16, 16)] * 2)
    noisy = GaussianOTTransformer(stochastic="always")
    for seed in (np.random.RandomState(0), np.random.default_rng(0), 2**32 - 1):
        dot = LatentOTTransformer(vae="pixel", transport=noisy, random_state=seed)
        assert dot.fit(restored, natural).transform(restored[0]).shape == (16, 16, 3)


@pytest.mark.parametrize("failure", ["unreadable", "interrupt"])
def test_a_failing_fit_leaves_the_operator_as_it_was(pixel_fit, tmp_path, monkeypatch, failure):
    dot, restored = pixel_fit
    natural = random_images(1, [(20, 28)] * 3, contrast=1.5)
    fitted = {name: getattr(dot, name) for name in ("restored_stats_", "gaussian_ot_", "w2_")}
    expected = dot.transform(restored[0])
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    if failure == "unreadable":
        error, images = ImageReadError, [restored[0], broken]  # the second batch fails
    else:
        error, images = KeyboardInterrupt, restored
        merge, calls = GaussianStats.merge, []

        def interrupting(self, other):
            calls.append(1)
            if len(calls) == 2:  # the second batch
                raise KeyboardInterrupt
            return merge(self, other)

        monkeypatch.setattr(GaussianStats, "merge", interrupting)
    with pytest.raises(error):
        dot.set_params(batch_size=1).fit(images, natural)
    monkeypatch.undo()
    dot.set_params(batch_size=4)
    assert all(getattr(dot, name) is value for name, value in fitted.items())
    assert np.array_equal(dot.transform(restored[0]), expected)
    # A first fit that fails leaves the operator cleanly unfitted.
    fresh = LatentOTTransformer(vae="pixel", batch_size=1)
    with pytest.raises(ImageReadError):
        fresh.fit([restored[0], broken], natural)
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(fresh))
    with pytest.raises(NotFittedError):
        fresh.transform(restored[0])


def test_a_prior_pinned_to_one_scale_is_used_at_that_scale(taef2_dir):
    prior = builtin_prior("taef2")
    assert prior.at_scale(600).scales == (512,) and prior.at_scale(5000).scales == (2048,)
    assert pickle.loads(pickle.dumps(prior.at_scale(600))).scales == (512,)
    restored = random_images(5, [(64, 64)])
    vae = load_autoencoder(taef2_dir)
    auto = LatentOTTransformer(vae=vae, random_state=0).fit(restored)
    pinned = LatentOTTransformer(vae=vae, prior=prior.at_scale(2048), random_state=0)
    assert auto.prior_scale_ == 256 and pinned.fit(restored).prior_scale_ == 2048
    assert clone(pinned).get_params()["prior"].scales == (2048,)


def test_an_operator_refuses_another_autoencoder_of_the_same_shape(
    tiny_models_dir, tiny_kl_model, tmp_path
):
    vae = tiny_models_dir / "sd-vae-ft-mse"
    restored = random_images(30, [(32, 32)] * 2, contrast=0.6)
    natural = random_images(31, [(32, 32)] * 2)
    path = tmp_path / "op.safetensors"
    LatentOTTransformer(vae=vae, patch_size=1, random_state=0).fit(restored, natural).save(path)
    # The same configuration, other weights: latents of the same shape, another distribution.
    other = tmp_path / "other-vae"
    retrained = copy.deepcopy(tiny_kl_model)
    with torch.no_grad():
        retrained.encoder.conv_in.weight.mul_(1.5)
    retrained.save_pretrained(other)

    loaded = LatentOTTransformer.load(path).set_params(vae=other)
    with pytest.raises(IncompatibleAutoencoderError, match=r"vae: this operator was made with"):
        loaded.transform(restored[0])
    declined = LatentOTTransformer.load(path, check_autoencoder=False).set_params(vae=other)
    assert declined.transform(restored[0]).shape == (32, 32, 3)
    # A copy of the same weights is the same autoencoder.
    copied = tmp_path / "copy-vae"
    tiny_kl_model.save_pretrained(copied)
    same = LatentOTTransformer.load(path)
    expected = same.transform(restored[0])
    np.testing.assert_array_equal(same.set_params(vae=copied).transform(restored[0]), expected)


def test_fitting_from_too_few_patch_vectors_warns_with_the_numbers():
    restored = random_images(40, [(8, 8)] * 2, contrast=0.6)  # 2 x 36 patches of dimension 27
    natural = random_images(41, [(40, 40)] * 4)
    with pytest.warns(FitWarning) as caught:
        LatentOTTransformer(vae="pixel", patch_size=3).fit(restored, natural)
    assert [str(w.message) for w in caught] == [
        "restored: 72 patch vectors for statistics of dimension 27; a covariance needs several "
        "times more (at least 270, 10 per dimension): fit on more or larger images, or with a "
        "smaller patch_size"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)  # enough on both sides: no warning
        LatentOTTransformer(vae="pixel", patch_size=3).fit(natural, natural)


def test_transforming_images_far_from_the_size_of_the_fit_warns_once_per_size():
    images = random_images(42, [(48, 48)] * 3)
    dot = LatentOTTransformer(vae="pixel", patch_size=1).fit(images, images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        dot.transform(random_images(43, [(90, 40)])[0])  # sqrt(90 * 40) = 60 px: close
    with pytest.warns(FitWarning) as caught:
        dot.transform(random_images(44, [(120, 160)])[0])
    assert [str(w.message) for w in caught] == [
        "images of 160 x 120 px are far from the size of the restored images of the fit "
        "(about 48 px; more than a factor 2): latent statistics change with scale, and the "
        "transport may crush blacks or blow highlights; resize them, or fit on images of this size"
    ]
