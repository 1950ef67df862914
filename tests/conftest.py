"""Shared test setup: no network, and where the read-only shared data lies."""

import os
from pathlib import Path

import pytest

# Tests never reach a model hub; a missing local model must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository (read it where it lies, never copy it)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
