"""Tests of latent_ot.autoencoders: the adapters' contract, loading, and a real pretrained model."""

import copy
import hashlib
import importlib
import itertools
import logging
import shutil
import socket
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from photos import PHOTO_NAMES, load_photo

from latent_ot.autoencoders import (
    AUTO_TILE_SIZES,
    BUNDLED_WEIGHTS,
    MODELS_DIR_ENV,
    PRESETS,
    Autoencoder,
    DiffusersKLAutoencoder,
    DiffusersTinyAutoencoder,
    PixelAutoencoder,
    TAESDAutoencoder,
    _loading,
    load_autoencoder,
)
from latent_ot.exceptions import AutoencoderNotFoundError

# diffusers passes a deprecated argument to huggingface_hub when it looks at the hub cache.
pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")

# The TAEF2 files as published (bytes, sha256), which the package bundles unchanged.
PUBLISHED_TAEF2 = {
    "taef2_encoder.pth": (
        2_704_692,
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    ),
    "taef2_decoder.pth": (
        2_704_756,
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
    ),
}


@pytest.fixture(autouse=True)
def _no_models_dir_env(monkeypatch):
    # A developer's own LATENT_OT_MODELS_DIR must not change what these tests find.
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline hub with an empty cache, and any socket connection fails loudly."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads these at import time; patch the values it uses at call time too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Pixel autoencoder and input checks
# --------------------------------------------------------------------------------------------


def test_pixel_round_trip_is_identity_and_returns_new_tensors():
    ae = load_autoencoder("pixel")
    assert isinstance(ae, PixelAutoencoder)
    assert (ae.factor, ae.latent_channels) == (1, 3)
    images = _images(size=5)
    latents = ae.encode(images)
    assert latents.dtype == torch.float32
    assert torch.equal(latents, images)
    latents.add_(0)  # an ordinary tensor, not an inference tensor
    assert latents.data_ptr() != images.data_ptr()
    assert torch.equal(ae.decode(latents), images)


def test_pixel_decode_clamps():
    out = PixelAutoencoder().decode(torch.tensor([-1.0, 0.25, 2.0]).view(1, 3, 1, 1))
    assert out.flatten().tolist() == [0.0, 0.25, 1.0]


@pytest.mark.parametrize(
    "images",
    [torch.rand(3, 16, 16), torch.rand(1, 1, 16, 16), torch.rand(1, 4, 16, 16)],
    ids=["ndim3", "gray", "rgba"],
)
def test_encode_rejects_bad_shapes(images):
    with pytest.raises(ValueError, match="images"):
        PixelAutoencoder().encode(images)


def test_encode_rejects_integer_images():
    with pytest.raises(ValueError, match=r"images.*floating"):
        PixelAutoencoder().encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_encode_rejects_size_not_multiple_of_factor(tiny_taesd_dir):
    ae = TAESDAutoencoder.from_directory(tiny_taesd_dir)
    with pytest.raises(ValueError, match=r"images.*factor 8"):
        ae.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"images.*factor 8"):
        ae.encode(torch.rand(1, 3, 32, 12))


def test_decode_rejects_wrong_latent_channels():
    with pytest.raises(ValueError, match="latents"):
        PixelAutoencoder().decode(torch.rand(1, 4, 8, 8))


@pytest.mark.parametrize("vae", [3, 2.5, None, [1, 2]])
def test_wrong_type_is_a_type_error(vae):
    with pytest.raises(TypeError, match="vae"):
        load_autoencoder(vae)


def test_unknown_short_name_lists_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoencoderNotFoundError) as info:
        load_autoencoder("no-such-vae")
    for preset in PRESETS:
        assert preset in str(info.value)


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        load_autoencoder("pixel", dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# TAESD implementation against diffusers' AutoencoderTiny
# --------------------------------------------------------------------------------------------


def _random_tiny(width=16, latent_channels=4, seed=0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(
        encoder_block_out_channels=(width,) * 4,
        decoder_block_out_channels=(width,) * 4,
        latent_channels=latent_channels,
    ).eval()
    with torch.no_grad():  # centre the output in [0, 1] so that clamping hides little
        model.decoder.layers[-1].bias.add_(0.5)
    return model


def _to_taesd_layout(model):
    """diffusers AutoencoderTiny state dict -> the TAESD .pth key layout.

    The encoders share indices; TAESD's decoder has the clamp at index 0, so its indices are
    diffusers' plus one.
    """
    encoder, decoder = {}, {}
    for key, value in model.state_dict().items():
        part, _, index, rest = key.split(".", 3)
        if part == "encoder":
            encoder[f"{index}.{rest}"] = value.clone()
        else:
            decoder[f"{int(index) + 1}.{rest}"] = value.clone()
    return encoder, decoder


@pytest.fixture(scope="module")
def tiny_model():
    return _random_tiny()


@pytest.fixture(scope="module")
def tiny_taesd_dir(tmp_path_factory, tiny_model):
    directory = tmp_path_factory.mktemp("weights") / "taesd"
    directory.mkdir()
    encoder, decoder = _to_taesd_layout(tiny_model)
    torch.save(encoder, directory / "taesd_encoder.pth")
    torch.save(decoder, directory / "taesd_decoder.pth")
    return directory


def test_taesd_matches_diffusers_tiny(tiny_model, tiny_taesd_dir):
    ae = load_autoencoder(tiny_taesd_dir)
    assert isinstance(ae, TAESDAutoencoder)
    assert (ae.factor, ae.latent_channels) == (8, 4)
    assert ae.encoder[11].pool is None  # deduced: no pooling branch in this state dict
    images = _images(size=32)
    with torch.no_grad():
        expected_latents = tiny_model.encode(images * 2 - 1).latents
        latents = ae.encode(images)
        torch.testing.assert_close(latents, expected_latents, rtol=1e-5, atol=1e-5)

        raw = (tiny_model.decode(latents).sample + 1) / 2
        assert ((raw > 0) & (raw < 1)).float().mean() > 0.5  # the comparison is not all clamps
        torch.testing.assert_close(ae.decoder(latents), raw, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ae.decode(latents), raw.clamp(0, 1), rtol=1e-5, atol=1e-5)


def test_diffusers_tiny_adapter_uses_the_zero_one_range(tiny_model, tiny_taesd_dir):
    tiny = load_autoencoder(tiny_model)
    assert isinstance(tiny, DiffusersTinyAutoencoder)
    assert (tiny.factor, tiny.latent_channels) == (8, 4)
    ours = TAESDAutoencoder.from_directory(tiny_taesd_dir)
    images = _images(size=16)
    latents = tiny.encode(images)
    torch.testing.assert_close(latents, ours.encode(images), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiny.decode(latents), ours.decode(latents), rtol=1e-5, atol=1e-5)


def test_taesd_to_bfloat16_keeps_float32_outputs(tiny_taesd_dir):
    ae = load_autoencoder(tiny_taesd_dir, dtype=torch.bfloat16)
    assert ae.dtype == torch.bfloat16
    assert ae.encoder[0].weight.dtype == torch.bfloat16
    latents = ae.encode(_images(size=16))
    assert latents.dtype == torch.float32
    assert ae.decode(latents).dtype == torch.float32


def test_a_diffusers_model_changes_dtype_silently_and_keeps_float32_outputs(tiny_kl_model):
    model = copy.deepcopy(tiny_kl_model)
    # diffusers logs through its own handler; collect what reaches the "diffusers" logger.
    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append
    logging.getLogger("diffusers").addHandler(collector)
    try:
        # float16: torch's bfloat16 attention on the CPU needs AVX-512 (not every machine has it)
        ae = load_autoencoder(model, dtype=torch.float16)
        assert next(model.parameters()).dtype == torch.float16
        latents = ae.encode(_images(size=16))
        assert latents.dtype == torch.float32 and ae.decode(latents).dtype == torch.float32
        ae.to(dtype=torch.float32)
        assert next(model.parameters()).dtype == torch.float32
    finally:
        logging.getLogger("diffusers").removeHandler(collector)
    # ModelMixin.to would log "There are modules ... that should be kept in float32: []".
    assert [record.getMessage() for record in records] == []


def test_taesd_pooling_branch_deduced_from_state_dict():
    from latent_ot.autoencoders.taesd import _taesd_decoder, _taesd_encoder

    torch.manual_seed(0)
    encoder = _taesd_encoder(8, 6, pool_channels=32).state_dict()
    decoder = _taesd_decoder(8, 6, pool_channels=32).state_dict()
    ae = TAESDAutoencoder(encoder, decoder)
    assert ae.latent_channels == 6
    assert ae.encoder[11].pool is not None and ae.decoder[3].pool is not None
    assert ae.decoder[3].pool[1].num_groups == 4
    assert ae.decode(ae.encode(_images(n=1, size=8))).shape == (1, 3, 8, 8)


def test_corrupt_pth_names_the_file(tmp_path):
    encoder, decoder = tmp_path / "taesd_encoder.pth", tmp_path / "taesd_decoder.pth"
    encoder.write_bytes(np.random.default_rng(0).bytes(1000))
    decoder.write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(ValueError, match=r"taesd_encoder\.pth"):
        load_autoencoder(tmp_path)


def test_swapped_pair_names_the_file(tmp_path, tiny_taesd_dir):
    for part, other in (("encoder", "decoder"), ("decoder", "encoder")):
        (tmp_path / f"taesd_{part}.pth").write_bytes(
            (tiny_taesd_dir / f"taesd_{other}.pth").read_bytes()
        )
    with pytest.raises(ValueError, match=r"taesd_encoder\.pth.*TAESD encoder"):
        TAESDAutoencoder.from_directory(tmp_path)


def test_mismatched_pair_is_rejected(tmp_path, tiny_taesd_dir):
    _, decoder = _to_taesd_layout(_random_tiny(latent_channels=8))
    torch.save(decoder, tmp_path / "other_decoder.pth")
    with pytest.raises(ValueError, match="latent channels"):
        TAESDAutoencoder(tiny_taesd_dir / "taesd_encoder.pth", tmp_path / "other_decoder.pth")


def test_directory_without_a_model(tmp_path):
    with pytest.raises(AutoencoderNotFoundError, match=str(tmp_path)):
        load_autoencoder(tmp_path)


# --------------------------------------------------------------------------------------------
# diffusers AutoencoderKL: loading by directory, preset, hub id; mean versus sample
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kl_model(tiny_kl_model):
    return tiny_kl_model


@pytest.fixture(scope="module")
def models_dir(tiny_models_dir):
    return tiny_models_dir


def test_kl_by_directory_encodes_the_mean(kl_model, models_dir):
    ae = load_autoencoder(models_dir / "sd-vae-ft-mse")
    assert isinstance(ae, DiffusersKLAutoencoder)
    assert (ae.factor, ae.latent_channels) == (2, 4)
    assert str(models_dir / "sd-vae-ft-mse") in ae.name
    images = _images(size=16)
    latents = ae.encode(images)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    with torch.no_grad():
        expected = kl_model.encode(images * 2 - 1).latent_dist.mean
        torch.testing.assert_close(latents, expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            ae.decode(latents), ((kl_model.decode(expected).sample + 1) / 2).clamp(0, 1)
        )
    assert torch.equal(ae.encode(images), latents)


@pytest.mark.parametrize("vae", ["sd-vae-ft-mse", "stabilityai/sd-vae-ft-mse"])
def test_kl_from_models_dir_before_the_hub(vae, kl_model, models_dir, no_network):
    ae = load_autoencoder(vae, models_dir=models_dir)
    assert isinstance(ae, DiffusersKLAutoencoder)
    images = _images(size=8)
    torch.testing.assert_close(ae.encode(images), DiffusersKLAutoencoder(kl_model).encode(images))


def test_kl_sample_latent_is_reproducible(models_dir):
    ae = load_autoencoder(models_dir / "sd-vae-ft-mse", sample_latent=True)
    images = _images(size=16)
    first = ae.encode(images, generator=torch.Generator().manual_seed(3))
    second = ae.encode(images, generator=torch.Generator().manual_seed(3))
    other = ae.encode(images, generator=torch.Generator().manual_seed(4))
    mean = DiffusersKLAutoencoder(ae.model).encode(images)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, mean)


def test_sample_latent_refused_for_deterministic_encoders(tiny_taesd_dir):
    with pytest.raises(ValueError, match="sample_latent"):
        load_autoencoder(tiny_taesd_dir, sample_latent=True)
    with pytest.raises(ValueError, match="sample_latent"):
        load_autoencoder(PixelAutoencoder(), sample_latent=True)


def test_instances_pass_through(kl_model):
    ae = DiffusersKLAutoencoder(kl_model)
    assert load_autoencoder(ae) is ae
    wrapped = load_autoencoder(kl_model)
    assert isinstance(wrapped, DiffusersKLAutoencoder) and wrapped.model is kl_model
    assert isinstance(wrapped, Autoencoder)


def _put_in_hub_cache(model, cache, repo_id):
    """Lay ``model`` out the way huggingface_hub caches a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_loads_from_the_hf_cache_offline(tmp_path, no_network, kl_model, tiny_model):
    cache = tmp_path / "hf_cache"
    _put_in_hub_cache(kl_model, cache, "someone/tiny-kl")
    _put_in_hub_cache(tiny_model, cache, "someone/tiny-taesd")
    kl = load_autoencoder("someone/tiny-kl", models_dir=tmp_path / "empty")
    tiny = load_autoencoder("someone/tiny-taesd")
    assert isinstance(kl, DiffusersKLAutoencoder) and "someone/tiny-kl" in kl.name
    assert isinstance(tiny, DiffusersTinyAutoencoder)
    images = _images(size=16)
    torch.testing.assert_close(kl.encode(images), DiffusersKLAutoencoder(kl_model).encode(images))


def test_missing_model_message_says_where_it_looked(tmp_path, monkeypatch, no_network):
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoencoderNotFoundError) as info:
        load_autoencoder("sd-vae-ft-mse", models_dir=empty)
    message = str(info.value)
    assert str(empty / "sd-vae-ft-mse") in message
    assert "stabilityai/sd-vae-ft-mse" in message
    assert MODELS_DIR_ENV in message
    assert info.value.__cause__ is not None


def test_missing_taef2_never_tries_the_hub(tmp_path, monkeypatch, no_network):
    # Neither in the models directory nor bundled (an installation that lost its weights).
    monkeypatch.setattr(_loading, "BUNDLED_WEIGHTS", tmp_path / "bundled")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(AutoencoderNotFoundError) as info:
        load_autoencoder("taef2")
    message = str(info.value)
    assert str(tmp_path / "taef2") in message
    assert "taef2_encoder.pth" in message and MODELS_DIR_ENV in message
    assert str(tmp_path / "bundled" / "taef2") in message


# --------------------------------------------------------------------------------------------
# A real pretrained autoencoder: TAEF2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taef2():
    return load_autoencoder("taef2")


def test_taef2_by_models_dir_and_env(taef2, tmp_path, monkeypatch):
    assert (taef2.factor, taef2.latent_channels) == (8, 32)
    assert taef2.encoder[11].pool is not None and taef2.decoder[3].pool is not None
    own = tmp_path / "models"
    shutil.copytree(BUNDLED_WEIGHTS / "taef2", own / "taef2")
    by_dir = load_autoencoder("taef2", models_dir=own)
    monkeypatch.setenv(MODELS_DIR_ENV, str(own))
    from_env = load_autoencoder("taef2")
    for loaded in (by_dir, from_env):
        assert (loaded.factor, loaded.latent_channels) == (8, 32)
        assert str(own / "taef2") in loaded.name
        assert torch.equal(loaded.encoder[0].weight, taef2.encoder[0].weight)


def _photo_tensor(name):
    """A scikit-image photograph as a ``1 x 3 x H x W`` float tensor in ``[0, 1]``."""
    array = load_photo(name).astype(np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


@pytest.mark.parametrize("name", PHOTO_NAMES[:5])
def test_taef2_reconstructs_real_photos(taef2, name):
    image = _photo_tensor(name)
    height, width = image.shape[-2:]
    padded = F.pad(image, (0, -width % 8, 0, -height % 8), mode="reflect")
    latents = taef2.encode(padded)
    assert latents.shape == (1, 32, padded.shape[-2] // 8, padded.shape[-1] // 8)
    restored = taef2.decode(latents)[..., :height, :width]
    assert restored.min() >= 0 and restored.max() <= 1
    psnr = -10 * torch.log10(F.mse_loss(restored, image)).item()
    assert psnr > 28, f"{name}: PSNR {psnr:.2f} dB"


# --------------------------------------------------------------------------------------------
# The TAEF2 weights bundled with the package
# --------------------------------------------------------------------------------------------

BUNDLED_TAEF2 = BUNDLED_WEIGHTS / "taef2"
BUNDLED_FILES = ("taef2_encoder.pth", "taef2_decoder.pth", "LICENSE", "README.md")


def test_bundled_weights_are_the_published_files_with_their_license():
    published = PUBLISHED_TAEF2
    bundled_readme = (BUNDLED_TAEF2 / "README.md").read_text(encoding="utf-8")
    for name, (size, sha256) in published.items():
        data = (BUNDLED_TAEF2 / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == sha256, name
        assert sha256 in bundled_readme  # the README beside them documents these very files
    license_text = (BUNDLED_TAEF2 / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2023 Ollin Boer Bohan" in license_text
    assert [name for name, preset in PRESETS.items() if preset.bundled] == ["taef2"]


def test_taef2_loads_the_bundled_copy_offline(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    ae = load_autoencoder("taef2")
    assert isinstance(ae, TAESDAutoencoder)
    assert (ae.factor, ae.latent_channels) == (8, 32)
    assert str(BUNDLED_TAEF2) in ae.name
    # A models directory without its own taef2/ leaves the bundled copy in use.
    assert str(BUNDLED_TAEF2) in load_autoencoder("taef2", models_dir=tmp_path).name

    # A smooth 64 x 64 crop of a real photograph (the sky beside the astronaut) comes back
    # close.
    crop = _photo_tensor("astronaut")[..., 0:64, 448:512]
    restored = ae.decode(ae.encode(crop))
    psnr = -10 * torch.log10(F.mse_loss(restored, crop)).item()
    assert psnr > 32, f"PSNR {psnr:.2f} dB"


def test_a_models_dir_copy_of_taef2_takes_precedence(tmp_path, monkeypatch):
    own = tmp_path / "models" / "taef2"
    own.mkdir(parents=True)
    shutil.copy(BUNDLED_TAEF2 / "taef2_encoder.pth", own)
    decoder = torch.load(BUNDLED_TAEF2 / "taef2_decoder.pth", weights_only=True)
    decoder["19.bias"] = decoder["19.bias"] + 0.25  # the output layer: every pixel shifts
    torch.save(decoder, own / "taef2_decoder.pth")

    bundled = load_autoencoder("taef2")
    by_argument = load_autoencoder("taef2", models_dir=tmp_path / "models")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    by_environment = load_autoencoder("taef2")
    images = _images(n=1, size=16)
    latents = bundled.encode(images)
    with torch.no_grad():
        reference = bundled.decoder(latents)
    for ae in (by_argument, by_environment):
        assert str(own) in ae.name
        assert torch.equal(ae.encode(images), latents)  # the same encoder file
        with torch.no_grad():
            shift = ae.decoder(latents) - reference
        torch.testing.assert_close(shift, torch.full_like(shift, 0.25), rtol=0, atol=1e-3)


def test_wheel_and_sdist_ship_the_weights_and_their_license(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel needs setuptools (test extra)")
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.rst", "LICENSE", "MANIFEST.in"):
        if (root / name).is_file():
            shutil.copy(root / name, source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "latent_ot", source / "latent_ot", ignore=ignore)
    # The build backend itself, as pip and build call it: offline, no isolated environment.
    script = (
        "from setuptools import build_meta as b; b.build_wheel('../dist'); b.build_sdist('../dist')"
    )
    built = subprocess.run(
        [sys.executable, "-c", script], cwd=source, capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr[-3000:]

    expected = {f"latent_ot/autoencoders/weights/taef2/{name}" for name in BUNDLED_FILES}
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert expected <= set(archive.namelist())
        for name in expected:
            assert archive.read(name) == (root / name).read_bytes(), name
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[-1] for name in archive.getnames()}
    assert expected <= members


# --------------------------------------------------------------------------------------------
# Tiling of large images
# --------------------------------------------------------------------------------------------


def _count_calls(module):
    """Record the input shape of every call of ``module``."""
    shapes = []
    module.register_forward_hook(lambda _module, inputs, _output: shapes.append(inputs[0].shape))
    return shapes


@pytest.fixture(scope="module")
def pooled_taesd():
    """A random TAESD with taef2's GroupNorm pooling branch (which sees the whole image)."""
    from latent_ot.autoencoders.taesd import _taesd_decoder, _taesd_encoder

    torch.manual_seed(0)
    encoder = _taesd_encoder(8, 6, pool_channels=32).state_dict()
    decoder = _taesd_decoder(8, 6, pool_channels=32).state_dict()
    return TAESDAutoencoder(encoder, decoder)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 3000),
    tile=st.integers(1, 80),
    overlap=st.integers(0, 40),
    align=st.sampled_from([1, 2, 8]),
)
def test_tile_spans_partition_the_axis_with_context(length, tile, overlap, align):
    from latent_ot.autoencoders._tiling import _tile_spans

    tile, overlap = tile * align, min(overlap, tile // 2) // 2 * 2 * align
    length = length * align
    spans = _tile_spans(length, tile, overlap, align)
    assert spans[0].keep_start == 0 and spans[-1].keep_stop == length
    for span, following in itertools.pairwise(spans):
        assert span.keep_stop == following.keep_start  # kept parts are contiguous
        assert following.start % align == 0
    for span in spans:
        assert 0 <= span.start <= span.keep_start < span.keep_stop <= span.stop <= length
        assert span.stop - span.start <= tile
        # Context on every inner side: half the overlap, as promised.
        assert span.keep_start == 0 or span.keep_start - span.start >= overlap // 2
        assert span.keep_stop == length or span.stop - span.keep_stop >= overlap // 2
    if length <= tile:
        assert len(spans) == 1


def test_tile_spans_examples():
    from latent_ot.autoencoders._tiling import _tile_spans

    # 1024 px in tiles of at most 512 sharing 128: two tiles could not cover it with context.
    spans = _tile_spans(1024, 512, 128, 8)
    assert [(s.start, s.stop) for s in spans] == [(0, 432), (304, 736), (608, 1024)]
    assert [(s.keep_start, s.keep_stop) for s in spans] == [(0, 368), (368, 672), (672, 1024)]


def test_taesd_tiles_match_untiled_on_odd_sizes(pooled_taesd):
    ae = pooled_taesd
    images = torch.rand(1, 3, 200, 136, generator=torch.Generator().manual_seed(0))
    untiled_latents = ae.set_tiling(None).encode(images)
    untiled = ae.decode(untiled_latents)

    first_layer, last_layer = _count_calls(ae.encoder[0]), _count_calls(ae.decoder[-1])
    # 200 x 136 px: 3 x 2 tiles, neither size a multiple of the tile; 32 px of context is
    # less than the default 64 but enough for these random weights at this tolerance.
    ae.set_tiling(128, overlap=64)
    latents = ae.encode(images)
    decoded = ae.decode(untiled_latents)
    for calls in (first_layer, last_layer):
        assert len(calls) == 6 and max(max(shape[-2:]) for shape in calls) <= 128
    torch.testing.assert_close(latents, untiled_latents, rtol=0, atol=1e-4)
    torch.testing.assert_close(decoded, untiled, rtol=0, atol=1e-4)

    # The context is what makes the tiles agree: without it, the seams show.
    ae.set_tiling(128, overlap=0)
    assert (ae.encode(images) - untiled_latents).abs().max() > 1e-2
    assert (ae.decode(untiled_latents) - untiled).abs().max() > 1e-2


def test_images_within_one_tile_are_not_tiled(pooled_taesd):
    ae = pooled_taesd
    images = torch.rand(2, 3, 64, 40, generator=torch.Generator().manual_seed(1))
    expected_latents = ae.set_tiling(None).encode(images)
    expected = ae.decode(expected_latents)
    calls = _count_calls(ae.encoder[0])
    ae.set_tiling(64, overlap=32)
    latents = ae.encode(images)
    assert torch.equal(latents, expected_latents)
    assert torch.equal(ae.decode(expected_latents), expected)
    assert [tuple(shape) for shape in calls] == [(2, 3, 64, 40)]  # one pass, whole batch


def test_large_batches_are_tiled_one_image_at_a_time(pooled_taesd):
    ae = pooled_taesd
    images = torch.rand(3, 3, 96, 48, generator=torch.Generator().manual_seed(2))
    ae.set_tiling(None)
    expected = torch.cat([ae.encode(image[None]) for image in images])
    calls = _count_calls(ae.encoder[0])
    latents = ae.set_tiling(64, overlap=16).encode(images)
    assert all(shape[0] == 1 for shape in calls) and len(calls) == 3 * 2
    assert latents.shape == (3, 6, 12, 6)
    # A context of 8 px is too little for exactness, but each image is tiled on its own.
    assert not torch.allclose(latents, expected, atol=1e-4)
    for index, image in enumerate(images):
        torch.testing.assert_close(latents[index : index + 1], ae.encode(image[None]))


def test_diffusers_tiny_tiles_exactly_with_16_latent_channels():
    # diffusers' own AutoencoderTiny tiling assumes 4 latent channels; ours does not.
    model = _random_tiny(width=8, latent_channels=16)
    model.enable_tiling()  # the user's setting, ignored during our calls and kept
    ae = DiffusersTinyAutoencoder(model)
    images = torch.rand(1, 3, 240, 200, generator=torch.Generator().manual_seed(0))
    ae.set_tiling(None)
    expected_latents = ae.encode(images)
    expected = ae.decode(expected_latents)
    calls = _count_calls(model.encoder)
    ae.set_tiling(192, overlap=96)
    torch.testing.assert_close(ae.encode(images), expected_latents, rtol=0, atol=1e-4)
    torch.testing.assert_close(ae.decode(expected_latents), expected, rtol=0, atol=1e-4)
    assert len(calls) == 2 * 2
    assert model.use_tiling


@pytest.mark.parametrize(
    ("tile_size", "overlap", "height", "width"),
    [(16, 4, 24, 40), (48, 20, 96, 56)],
    ids=["dyadic", "48-20"],
)
def test_kl_tiles_with_diffusers_own_tiling(tiny_kl_model, tile_size, overlap, height, width):
    import copy

    model = copy.deepcopy(tiny_kl_model)
    saved = (model.use_tiling, model.tile_sample_min_size, model.tile_overlap_factor)
    ae = DiffusersKLAutoencoder(model).set_tiling(tile_size, overlap=overlap)
    assert ae.tile_overlap == overlap
    images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    calls = _count_calls(model.encoder)
    latents = ae.encode(images)
    decoded = ae.decode(latents)
    assert latents.shape == (1, 4, height // 2, width // 2) and decoded.shape == images.shape
    assert len(calls) > 1 and max(max(shape[-2:]) for shape in calls) <= tile_size
    assert (model.use_tiling, model.tile_sample_min_size, model.tile_overlap_factor) == saved

    # The reference: diffusers' tiling configured by hand. Its overlap factor is a float,
    # which misplaces the tiles of a 48 px tile sharing 20 px (int(48 * (1 - 20/48)) == 27).
    model.enable_tiling()
    model.tile_sample_min_size, model.tile_latent_min_size = tile_size, tile_size // 2
    model.tile_overlap_factor = overlap / tile_size
    with torch.no_grad():
        reference = model.encode(images * 2 - 1).latent_dist.mean  # the mean, not a sample
        reference_decoded = ((model.decode(latents).sample + 1) / 2).clamp(0, 1)
    if tile_size == 16:
        torch.testing.assert_close(latents, reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(decoded, reference_decoded, rtol=0, atol=1e-6)
    else:
        assert reference.shape != latents.shape


def test_tiling_settings_are_checked(tiny_taesd_dir):
    ae = TAESDAutoencoder.from_directory(tiny_taesd_dir)
    with pytest.raises(ValueError, match=r"tile_size must be a positive multiple of the factor 8"):
        ae.set_tiling(500)
    with pytest.raises(ValueError, match="tile_size"):
        ae.set_tiling(0)
    with pytest.raises(ValueError, match="tile_size"):
        ae.set_tiling("large")
    with pytest.raises(ValueError, match=r"overlap must be a multiple of 2 x factor = 16"):
        ae.set_tiling(512, overlap=24)
    with pytest.raises(ValueError, match=r"overlap.*tile_size / 2 = 128"):
        ae.set_tiling(256, overlap=144)
    with pytest.raises(ValueError, match="tile_size"):
        load_autoencoder(tiny_taesd_dir, tile_size=100)
    assert ae.tile_size == AUTO_TILE_SIZES["cpu"]  # a refused setting changes nothing


def test_tiling_defaults_and_load_autoencoder(tiny_taesd_dir, monkeypatch):
    ae = load_autoencoder(tiny_taesd_dir)
    assert ae.tile_size == AUTO_TILE_SIZES["cpu"] and ae.tile_overlap == 128
    monkeypatch.setattr(ae, "device", torch.device("cuda"))  # "auto" follows the device
    assert ae.tile_size == AUTO_TILE_SIZES["cuda"]
    assert load_autoencoder("pixel").tile_size is None
    assert _Overflowing().tile_size is None  # subclasses elsewhere are not tiled unasked
    assert load_autoencoder(tiny_taesd_dir, tile_size=None).tile_size is None
    chosen = load_autoencoder(tiny_taesd_dir, tile_size=256, tile_overlap=64)
    assert (chosen.tile_size, chosen.tile_overlap) == (256, 64)
    assert load_autoencoder(chosen).tile_size == 256  # an instance keeps its own
    assert load_autoencoder(chosen, tile_size=None).tile_size is None


# --------------------------------------------------------------------------------------------
# NaN and infinite outputs
# --------------------------------------------------------------------------------------------


class _Overflowing(Autoencoder):
    """Overflows in half precision only (``limit``: the largest value a dtype survives)."""

    def __init__(self, dtype=torch.bfloat16, always=False):
        super().__init__(factor=1, latent_channels=3, name="overflowing", dtype=dtype)
        self.always, self.moves = always, []

    def _overflows(self, tensor):
        return self.always or tensor.dtype != torch.float32

    def _encode(self, images, generator):
        return images + 1 if not self._overflows(images) else images * float("inf")

    def _decode(self, latents):
        return latents - 1 if not self._overflows(latents) else latents * float("nan")

    def _move(self, device, dtype):
        self.moves.append(dtype)


def test_half_precision_overflow_is_retried_in_float32():
    ae = _Overflowing()
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"overflowing: encode overflowed in torch.bfloat16"):
        latents = ae.encode(images)
    assert ae.moves == [torch.float32, torch.bfloat16]  # cast for the retry, then back
    torch.testing.assert_close(latents, images + 1)
    with pytest.warns(RuntimeWarning, match="decode overflowed"):
        torch.testing.assert_close(ae.decode(latents), images)


def test_taesd_overflow_in_bfloat16_gives_the_float32_result(tiny_taesd_dir):
    ae = load_autoencoder(tiny_taesd_dir, dtype=torch.bfloat16)
    # The retry runs the bfloat16 weights in float32.
    reference = load_autoencoder(tiny_taesd_dir, dtype=torch.bfloat16).to(dtype=torch.float32)

    def overflow_in_half(_module, _inputs, output):
        return output * float("inf") if output.dtype == torch.bfloat16 else output

    ae.decoder[1].register_forward_hook(overflow_in_half)
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="computed again in float32"):
        decoded = ae.decode(latents)
    assert torch.isfinite(decoded).all()
    torch.testing.assert_close(decoded, reference.decode(latents), rtol=0, atol=1e-6)
    assert ae.decoder[1].weight.dtype == torch.bfloat16 and ae.dtype == torch.bfloat16
    assert not ae.decoder[1].weight.is_inference()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_non_finite_outputs_are_never_returned(dtype):
    ae = _Overflowing(dtype=dtype, always=True)
    images = torch.rand(1, 3, 4, 4)
    again = "and again in float32" if dtype == torch.bfloat16 else "from finite"
    with pytest.raises(ValueError, match=rf"overflowing: encode gave NaN or infinite .*{again}"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ae.encode(images)
    with pytest.raises(ValueError, match="overflowing: decode gave NaN"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ae.decode(images)


def test_non_finite_inputs_are_refused():
    images = torch.rand(1, 3, 4, 4)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images must be finite"):
        PixelAutoencoder().encode(images)
    with pytest.raises(ValueError, match="latents must be finite"):
        PixelAutoencoder().decode(images.clamp(0, 1) * float("inf"))


@pytest.mark.slow
def test_taef2_tiles_match_untiled_at_1024_px_without_seams():
    from PIL import Image

    from latent_ot.autoencoders._tiling import _tile_spans

    # A real photograph, upsampled to 1024 x 1024.
    large = Image.fromarray(load_photo("coffee")).resize((1024, 1024), Image.BICUBIC)
    images = torch.from_numpy(np.asarray(large, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    ae = load_autoencoder("taef2", tile_size=None)
    untiled_latents = ae.encode(images)
    untiled = ae.decode(untiled_latents)

    ae.set_tiling(512)  # the CPU default: 3 x 3 tiles of 432 px sharing 128 px
    calls = _count_calls(ae.encoder[0])
    latents = ae.encode(images)
    tiled = ae.decode(latents)
    assert len(calls) == 9
    assert (latents - untiled_latents).abs().mean() < 1e-3
    difference = (tiled - untiled).abs()
    assert difference.mean() < 1e-3
    # No seam: no pixel is off by as much as one grey level of an 8-bit image ...
    assert difference.max() < 1 / 255
    # ... and across each seam the image changes as much as without tiling.
    seams = [span.keep_start for span in _tile_spans(1024, 512, 128, 8)[1:]]
    for seam in seams:
        for axis in (-1, -2):
            jump = (tiled.narrow(axis, seam, 1) - tiled.narrow(axis, seam - 1, 1)).abs().mean()
            expected = (untiled.narrow(axis, seam, 1) - untiled.narrow(axis, seam - 1, 1)).abs()
            assert abs(jump - expected.mean()) < 1e-4


# --------------------------------------------------------------------------------------------
# Memory layout (channels-last) and tiling by memory
# --------------------------------------------------------------------------------------------


def _sd_vae_config():
    """The configuration of stabilityai/sd-vae-ft-mse, as the speed benchmark builds it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
        config = dict(importlib.import_module("_speed_cases").SD_VAE_CONFIG)
    sys.modules.pop("_speed_cases", None)
    return config


def _round_trip_in(ae, memory_format, images):
    ae.set_memory_format(memory_format)
    assert ae.memory_format == memory_format
    latents = ae.encode(images)
    decoded = ae.decode(latents)
    assert latents.is_contiguous() and decoded.is_contiguous()  # whatever the model's layout
    return latents, decoded


def test_taef2_channels_last_equals_contiguous_on_a_real_photo():
    images = _photo_tensor("astronaut")[..., :256, :192].contiguous()
    ae = load_autoencoder("taef2")
    assert ae.memory_format == "channels_last"  # the CPU default
    assert ae.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    latents, decoded = _round_trip_in(ae, "channels_last", images)
    expected_latents, expected = _round_trip_in(ae, "contiguous", images)
    assert ae.encoder[0].weight.is_contiguous()
    assert (latents - expected_latents).abs().mean() < 1e-5
    assert (decoded - expected).abs().mean() < 1e-5
    assert (decoded - images).abs().mean() < 0.05  # a real reconstruction, not noise


def test_kl_channels_last_equals_contiguous(tiny_kl_model):
    ae = DiffusersKLAutoencoder(copy.deepcopy(tiny_kl_model))
    assert ae.memory_format == "channels_last"
    assert ae.model.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    images = _images(n=2, size=48, seed=3)
    latents, decoded = _round_trip_in(ae, "channels_last", images)
    expected_latents, expected = _round_trip_in(ae, "contiguous", images)
    assert (latents - expected_latents).abs().mean() < 1e-5
    assert (decoded - expected).abs().mean() < 1e-5


def test_memory_format_follows_the_device_and_is_checked(tiny_taesd_dir, monkeypatch):
    ae = load_autoencoder(tiny_taesd_dir)
    monkeypatch.setattr(ae, "device", torch.device("cuda"))  # not measured there: contiguous
    assert ae.memory_format == "contiguous"
    assert load_autoencoder("pixel").memory_format == "contiguous"
    chosen = load_autoencoder(tiny_taesd_dir, memory_format="contiguous")
    assert chosen.memory_format == "contiguous" and chosen.encoder[0].weight.is_contiguous()
    assert load_autoencoder(chosen).memory_format == "contiguous"  # an instance keeps its own
    with pytest.raises(ValueError, match=r"memory_format must be one of .*got 'nhwc'"):
        load_autoencoder(tiny_taesd_dir, memory_format="nhwc")
    assert "memory_format='contiguous'" in repr(chosen)


def test_common_photo_sizes_run_whole_and_4k_is_tiled_by_default_on_cpu(monkeypatch):
    from latent_ot import memory

    # A machine with 2.5 GB free: a 2 GB budget (latent_ot.memory follows what it reads).
    monkeypatch.setattr(memory, "available_memory", lambda device: 2_500_000_000)
    ae = load_autoencoder("taef2")
    assert ae.memory_budget == 2 * 10**9
    assert not ae.will_tile(512, 768) and not ae.will_tile(1024, 1024)
    assert ae.will_tile(2048, 2048) and ae.will_tile(2160, 3840) and ae.will_tile(4096, 4096)
    assert ae.tile_size == 800 and ae.estimated_memory(800, 800) <= ae.memory_budget / 2
    calls = _count_calls(ae.encoder[0])
    latents = ae.encode(torch.rand(1, 3, 512, 768, generator=torch.Generator().manual_seed(0)))
    assert [tuple(shape) for shape in calls] == [(1, 3, 512, 768)]  # one pass, no tile
    assert latents.shape == (1, 32, 64, 96)

    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    sd_vae = load_autoencoder(AutoencoderKL(**_sd_vae_config()))
    assert not sd_vae.will_tile(512, 768) and sd_vae.will_tile(1024, 1024)
    assert sd_vae.will_tile(4096, 4096) and sd_vae.tile_size == 512
    # Half precision halves the estimate: a 1024 px image fits 6 GB on CUDA.
    sd_vae.to(dtype=torch.float16)
    assert sd_vae.estimated_memory(1024, 1024) * 2 == sd_vae.to(
        dtype=torch.float32
    ).estimated_memory(1024, 1024)


def test_a_batch_over_the_budget_runs_in_smaller_passes(pooled_taesd):
    ae = copy.deepcopy(pooled_taesd)
    images = torch.rand(5, 3, 64, 48, generator=torch.Generator().manual_seed(4))
    expected_latents = ae.set_tiling(None).encode(images)
    expected = ae.decode(expected_latents)
    # Room for two images per pass, not three: passes of 2, 2 and 1, never a tile.
    ae.set_tiling("auto", memory_budget=ae.estimated_memory(64, 48, count=2) + 1)
    assert not ae.will_tile(64, 48)
    encoder_calls, decoder_calls = _count_calls(ae.encoder[0]), _count_calls(ae.decoder[-1])
    latents = ae.encode(images)
    decoded = ae.decode(expected_latents)
    for calls in (encoder_calls, decoder_calls):
        assert [(shape[0], *shape[-2:]) for shape in calls] == [(2, 64, 48)] * 2 + [(1, 64, 48)]
    torch.testing.assert_close(latents, expected_latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)


def test_an_image_over_the_budget_is_tiled_and_matches_the_untiled_pass(pooled_taesd):
    ae = copy.deepcopy(pooled_taesd)
    images = torch.rand(2, 3, 640, 320, generator=torch.Generator().manual_seed(5))
    expected_latents = ae.set_tiling(None).encode(images)
    expected = ae.decode(expected_latents)
    budget = ae.estimated_memory(200, 200)  # one image alone is over it, far
    ae.set_tiling("auto", memory_budget=budget)
    assert ae.will_tile(640, 320) and ae.memory_budget == budget
    assert ae.tile_size == 256 and ae.tile_overlap == 128  # the smallest tile "auto" makes
    calls = _count_calls(ae.encoder[0])
    latents = ae.encode(images)
    assert all(shape[0] == 1 and max(shape[-2:]) <= 256 for shape in calls) and len(calls) > 2
    torch.testing.assert_close(latents, expected_latents, rtol=0, atol=1e-4)
    torch.testing.assert_close(ae.decode(expected_latents), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("budget", "error", "message"),
    [(0, ValueError, "got 0"), (1.5e9, TypeError, "got float"), ("big", TypeError, "got str")],
)
def test_memory_budget_is_checked(tiny_taesd_dir, budget, error, message, monkeypatch):
    from latent_ot import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 2_500_000_000)
    ae = TAESDAutoencoder.from_directory(tiny_taesd_dir)
    with pytest.raises(error, match=rf"memory_budget must be an int >= 1, {message}"):
        ae.set_tiling(memory_budget=budget)
    assert ae.memory_budget == 2 * 10**9  # a refused setting changes nothing
    assert ae.set_tiling(256).memory_budget is None  # only "auto" tiles by memory
    assert PixelAutoencoder().memory_budget is None and not PixelAutoencoder().will_tile(8, 8)


def test_a_kernel_missing_in_half_precision_names_the_dtype_to_change(tiny_kl_model, monkeypatch):
    ae = load_autoencoder(copy.deepcopy(tiny_kl_model), dtype=torch.bfloat16)

    def no_kernel(images, generator=None):
        raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")

    monkeypatch.setattr(ae, "_encode", no_kernel)
    with pytest.raises(RuntimeError) as info:
        ae.encode(_images(size=16))
    assert str(info.value) == (
        f"dtype: {ae.name} cannot encode in torch.bfloat16 on cpu with this torch build and "
        "processor (pack_vnni2 is only supported when avx512 is supported); load it with "
        "dtype=torch.float32"
    )
