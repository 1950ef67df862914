"""Shared test setup: no network, real photos from scikit-image, and where the read-only
benchmark data lies."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from photos import PHOTO_NAMES, load_photo

# Tests never reach a model hub; a missing local model must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

# ``../shared`` beside the repository holds the benchmarks' data; LATENT_OT_TEST_SHARED names
# another place. Only tests of the benchmark scripts need it: the package's tests run on real
# photos that scikit-image ships and on the TAEF2 weights bundled with the package.
SHARED = Path(
    os.environ.get("LATENT_OT_TEST_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The benchmarks' data, ``../shared`` beside the repository (read where it lies)."""
    if not SHARED.is_dir():
        pytest.skip(
            "the data of the benchmarks and examples (photo sets, feature network, learned "
            f"restorers) is not at {SHARED}: it is not part of the repository; set "
            "LATENT_OT_TEST_SHARED to its folder"
        )
    return SHARED


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real colour photographs (``H x W x 3`` uint8) by name, from scikit-image."""
    return {name: load_photo(name) for name in PHOTO_NAMES}


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory, photos) -> Path:
    """A folder of the :func:`photos` as PNG files, ``<name>.png``."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def taef2_dir() -> Path:
    """The pretrained TAEF2 weights bundled with the package."""
    from latent_ot.autoencoders import BUNDLED_WEIGHTS

    return Path(BUNDLED_WEIGHTS) / "taef2"


@pytest.fixture(scope="session")
def tiny_kl_model():
    """A small randomly initialised diffusers AutoencoderKL (factor 2, 4 latent channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
    ).eval()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory, tiny_kl_model) -> Path:
    """A local models directory holding ``tiny_kl_model`` as ``sd-vae-ft-mse/``, saved with
    ``save_pretrained``: the layout users get from the hub."""
    root = tmp_path_factory.mktemp("models")
    tiny_kl_model.save_pretrained(root / "sd-vae-ft-mse")
    return root
