"""The device and dtype rules ("auto" per machine, LOCAL_RANK, errors naming the argument)."""

import re

import pytest
import torch

from latent_ot import LatentOTTransformer
from latent_ot.autoencoders import load_autoencoder
from latent_ot.devices import check_device_available, resolve_device, resolve_dtype


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


@pytest.mark.parametrize(
    ("bad", "shown"), [("half-ish", "'half-ish'"), (torch.int8, "torch.int8"), (16, "16")]
)
def test_a_bad_dtype_names_the_argument_the_choices_and_itself(bad, shown):
    message = (
        "dtype must be one of 'auto', 'float32', 'float16', 'bfloat16', None or a floating "
        f"point torch.dtype, got {shown}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_dtype(bad, "cpu")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_autoencoder("pixel", dtype=bad)


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="a torch build without CUDA")
def test_a_cuda_device_is_refused_by_a_torch_build_without_cuda():
    with pytest.raises(ValueError, match=r"device='cuda:0' but this torch build has no CUDA"):
        check_device_available(torch.device("cuda:0"))
    assert check_device_available(torch.device("cpu")) == torch.device("cpu")


def test_the_estimator_loads_a_name_in_auto_dtype_and_keeps_an_instances():
    assert LatentOTTransformer(vae="pixel", device="cpu")._autoencoder().dtype == torch.float32
    half = load_autoencoder("pixel", dtype="bfloat16")
    assert LatentOTTransformer(vae=half, device="cpu")._autoencoder().dtype == torch.bfloat16
