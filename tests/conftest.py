"""Shared test setup: no network, and where the read-only shared data lies."""

import os
from pathlib import Path

import pytest
import torch

# Tests never reach a model hub; a missing local model must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

# ``../shared`` beside the repository; LATENT_OT_TEST_SHARED names another place, for machines
# (a GPU box) where the repository travels without it.
SHARED = Path(
    os.environ.get("LATENT_OT_TEST_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository (read it where it lies, never copy it)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


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
