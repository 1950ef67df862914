"""The device and dtype rules ("auto" per machine, LOCAL_RANK, errors naming the argument)."""

import pytest
import torch

from latent_ot import LatentOTTransformer
from latent_ot.devices import resolve_device, resolve_dtype


def test_auto_device_is_the_cpu_without_cuda_and_the_rank_gpu_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda:3")


def test_explicit_devices_pass_through_and_bad_ones_name_the_argument():
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device: 'gpu please' is not a torch device"):
        resolve_device("gpu please")
    with pytest.raises(TypeError, match="target must be 'auto'"):
        resolve_device(0, name="target")


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.float16),
        ("auto", torch.device("cuda:1"), torch.float16),
        (None, "cuda", torch.float32),
        ("bfloat16", "cpu", torch.bfloat16),
        ("torch.float16", "cpu", torch.float16),
        (torch.float64, "cuda", torch.float64),
    ],
)
def test_dtypes_resolve_per_device(dtype, device, expected):
    assert resolve_dtype(dtype, device) is expected


@pytest.mark.parametrize("bad", ["half-ish", torch.int8, 16])
def test_a_bad_dtype_names_the_argument_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"dtype must be 'auto', None or a floating point"):
        resolve_dtype(bad, "cpu")


def test_the_estimator_defaults_to_auto_which_is_float32_on_the_cpu():
    dot = LatentOTTransformer(vae="pixel", device="cpu")
    assert dot.dtype == "auto"
    assert dot._autoencoder().dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        LatentOTTransformer(vae="pixel", device="cpu", dtype="int8")._autoencoder()
