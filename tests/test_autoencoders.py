"""Tests of latent_ot.autoencoders: the adapters' contract, loading, and a real pretrained model."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latent_ot.autoencoders import (
    MODELS_DIR_ENV,
    PRESETS,
    Autoencoder,
    DiffusersKLAutoencoder,
    DiffusersTinyAutoencoder,
    PixelAutoencoder,
    TAESDAutoencoder,
    load_autoencoder,
)
from latent_ot.exceptions import AutoencoderNotFoundError

# diffusers passes a deprecated argument to huggingface_hub when it looks at the hub cache.
pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TAEF2_DIR = SHARED / "weights" / "taef2"
SET5 = sorted((SHARED / "images" / "Set5").glob("*.png"))

needs_taef2 = pytest.mark.skipif(
    not (TAEF2_DIR / "taef2_encoder.pth").is_file(),
    reason=f"pretrained TAEF2 weights not found in {TAEF2_DIR} (the shared/ folder is missing)",
)


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


def test_taesd_pooling_branch_deduced_from_state_dict():
    from latent_ot.autoencoders import _taesd_decoder, _taesd_encoder

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
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(AutoencoderNotFoundError) as info:
        load_autoencoder("taef2")
    message = str(info.value)
    assert str(tmp_path / "taef2") in message
    assert "taef2_encoder.pth" in message and MODELS_DIR_ENV in message


# --------------------------------------------------------------------------------------------
# A real pretrained autoencoder: TAEF2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taef2():
    return load_autoencoder("taef2", models_dir=SHARED / "weights")


@needs_taef2
def test_taef2_by_models_dir_and_env(taef2, monkeypatch):
    assert (taef2.factor, taef2.latent_channels) == (8, 32)
    assert taef2.encoder[11].pool is not None and taef2.decoder[3].pool is not None
    monkeypatch.setenv(MODELS_DIR_ENV, str(SHARED / "weights"))
    from_env = load_autoencoder("taef2")
    assert (from_env.factor, from_env.latent_channels) == (8, 32)
    assert "taef2" in from_env.name


def _read_rgb(path):
    from PIL import Image

    with Image.open(path) as image:
        array = np.array(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None]


@needs_taef2
@pytest.mark.parametrize("path", SET5, ids=[p.stem for p in SET5])
def test_taef2_reconstructs_set5(taef2, path):
    image = _read_rgb(path)
    height, width = image.shape[-2:]
    padded = F.pad(image, (0, -width % 8, 0, -height % 8), mode="reflect")
    latents = taef2.encode(padded)
    assert latents.shape == (1, 32, padded.shape[-2] // 8, padded.shape[-1] // 8)
    restored = taef2.decode(latents)[..., :height, :width]
    assert restored.min() >= 0 and restored.max() <= 1
    psnr = -10 * torch.log10(F.mse_loss(restored, image)).item()
    assert psnr > 28, f"{path.name}: PSNR {psnr:.2f} dB"
