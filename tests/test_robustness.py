"""Bad input and numerical edge cases: defined results or the package's documented errors."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from latent_ot import GaussianOTTransformer, LatentOTTransformer

# The documented exception types of the public API (see latent_ot.exceptions).
DOCUMENTED = (ValueError, TypeError, FileNotFoundError)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    restored = [rng.random((12, 12, 3)) * 0.5 for _ in range(2)]
    natural = [rng.random((12, 12, 3)) for _ in range(2)]
    return LatentOTTransformer(vae="pixel", random_state=0).fit(restored, natural)


DTYPES = [
    np.uint8,
    np.uint16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
    np.complex64,
]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9),
        elements=None
        if dtype is not np.float64
        else st.one_of(st.floats(-2, 3), st.sampled_from([np.nan, np.inf, -np.inf])),
    )
)
tensors = arrays.filter(lambda a: a.dtype != np.uint16).map(torch.from_numpy)
scalars = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=5), st.binary(max_size=5)
)
single = st.one_of(
    arrays, tensors, scalars, st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)
anything = st.one_of(single, st.lists(single, max_size=3), st.tuples(arrays, arrays))


def assert_documented_error(err: BaseException, argument: str) -> None:
    assert isinstance(err, DOCUMENTED), f"undocumented {type(err).__name__}: {err}"
    assert argument in str(err), f"message does not name {argument!r}: {err}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images=anything)
def test_transform_of_anything_returns_images_or_a_documented_error(fitted, images):
    try:
        out = fitted.transform(images)
    except BaseException as err:
        assert_documented_error(err, "images")
    else:
        assert type(out) is type(images) or isinstance(images, str | tuple)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(restored=anything)
def test_fit_of_anything_fits_or_raises_a_documented_error(restored):
    natural = [np.random.default_rng(1).random((12, 12, 3))]
    try:
        LatentOTTransformer(vae="pixel").fit(restored, natural)
    except BaseException as err:
        assert_documented_error(err, "restored")


# -- numerical edge cases ------------------------------------------------------------------------


def test_constant_images_give_a_defined_result():
    restored = [np.full((16, 16, 3), 0.25)] * 2
    natural = [np.full((16, 16, 3), 0.75)] * 2
    dot = LatentOTTransformer(vae="pixel", alpha=0.0, low_frequency_sigma=None, random_state=0)
    out = dot.fit(restored, natural).transform(restored[0])
    # Zero covariances: every patch moves to the natural mean.
    np.testing.assert_allclose(out, 0.75, atol=1e-6)
    # A constant is all low frequency: with the low-pass the input keeps it.
    out = dot.set_params(low_frequency_sigma=3.0).transform(restored[0])
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_identical_sets_give_the_identity(photo_dir):
    images = sorted(photo_dir.glob("*.png"))[:2]
    dot = LatentOTTransformer(vae="pixel", patch_size=5).fit(images, images)
    matrix = dot.gaussian_ot_.transport_matrix_
    assert np.abs(matrix - np.eye(matrix.shape[0])).max() < 1e-10
    assert dot.w2_ == 0.0


def test_condition_number_1e12_is_transported_without_nan():
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    scales = np.sqrt(np.logspace(0, -12, 6))
    X = rng.normal(size=(50_000, 6)) * scales @ basis.T
    target = rng.normal(size=(50_000, 6)) @ rng.normal(size=(6, 6))
    ot = GaussianOTTransformer().fit(X, target=target)
    Y = ot.transform(X)
    assert np.isfinite(Y).all() and ot.noise_cov_ is None
    np.testing.assert_allclose(np.cov(Y, rowvar=False), ot.cov_target_, rtol=1e-4, atol=1e-4)


def test_a_single_image_per_set_is_enough():
    rng = np.random.default_rng(3)
    dot = LatentOTTransformer(vae="pixel").fit(
        rng.random((10, 10, 3)) * 0.5, rng.random((10, 10, 3))
    )
    assert dot.n_images_restored_ == 1 and np.isfinite(dot.gaussian_ot_.transport_matrix_).all()
    assert np.isfinite(dot.transform(rng.random((10, 10, 3)))).all()


def test_singular_patch_covariance_falls_back_to_the_stochastic_map():
    # Gray images: the three channels are equal, so the 27-d pixel patches have rank 9.
    rng = np.random.default_rng(4)
    restored = [np.repeat(rng.random((20, 20, 1)), 3, axis=2) for _ in range(2)]
    natural = [rng.random((20, 20, 3)) for _ in range(2)]
    dot = LatentOTTransformer(vae="pixel", random_state=0).fit(restored, natural)
    assert dot.gaussian_ot_.noise_cov_ is not None
    out = dot.transform(restored[0])
    assert np.isfinite(out).all() and not np.allclose(out[..., 0], out[..., 1])


# -- an autoencoder from the hub, offline ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("offline mode", "HF_HUB_OFFLINE is set"),
        ("unreachable", "the Hugging Face hub cannot be reached from this machine"),
    ],
)
def test_a_hub_autoencoder_offline_says_so_and_what_to_do(cause, reason, monkeypatch, tmp_path):
    import diffusers
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from latent_ot.autoencoders import MODELS_DIR_ENV, load_autoencoder
    from latent_ot.exceptions import AutoencoderNotFoundError

    def load_config(hub_id):  # diffusers' error, raised from huggingface_hub's, as offline
        try:
            try:
                if cause == "offline mode":
                    raise OfflineModeIsEnabled("offline mode is enabled")
                raise ConnectionError("Name or service not known")
            except Exception as err:
                raise LocalEntryNotFoundError("cannot find the requested files") from err
        except LocalEntryNotFoundError as err:
            raise OSError(f"{hub_id} does not appear to have a file named config.json.") from err

    monkeypatch.setattr(diffusers.AutoencoderKL, "load_config", load_config)
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoencoderNotFoundError) as caught:
        load_autoencoder("someone/some-vae")
    message = str(caught.value)
    assert message.startswith(
        f"autoencoder 'someone/some-vae' is not available offline: {reason}, and no local copy "
        f"exists (looked in: {tmp_path / 'someone/some-vae'} (as a path; no such directory); "
        f"{tmp_path / 'some-vae'} (${MODELS_DIR_ENV}; not found)). Load it once while online "
        "(it is then cached). To use a local copy, put it in <models dir>/some-vae/"
    )
    assert "config.json" not in message


def test_another_hub_failure_still_names_its_cause(monkeypatch, tmp_path):
    import diffusers

    from latent_ot.autoencoders import MODELS_DIR_ENV, load_autoencoder
    from latent_ot.exceptions import AutoencoderNotFoundError

    def load_config(hub_id):
        raise OSError(f"{hub_id} is not a valid model identifier")

    monkeypatch.setattr(diffusers.AutoencoderKL, "load_config", load_config)
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(AutoencoderNotFoundError, match=r"^autoencoder 'someone/x' not found\. "):
        load_autoencoder("someone/x")
