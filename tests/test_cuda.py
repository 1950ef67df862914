"""On a CUDA device: float64 statistics on the GPU, the CPU's answers, half precision, NCCL.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``.
"""

import os
import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from latent_ot import GaussianOTTransformer, GaussianStats, LatentOTTransformer
from latent_ot.autoencoders import load_autoencoder
from latent_ot.distributed import gather_stats, synchronize_fit
from latent_ot.gaussian import fit_gaussian_map

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.cpu() - expected.cpu()).norm() / expected.cpu().norm())


@pytest.fixture(scope="module")
def crops(photos) -> list[np.ndarray]:
    """Eight real 128 x 128 crops of scikit-image photos, float32 in [0, 1], channels last."""
    corners = [(name, 0, 0) for name in photos] + [("astronaut", 256, 256), ("coffee", 128, 256)]
    return [
        np.ascontiguousarray(photos[name][y : y + 128, x : x + 128], dtype=np.float32) / 255
        for name, y, x in corners[:8]
    ]


@pytest.fixture(scope="module")
def taef2(taef2_dir):
    return taef2_dir


def test_statistics_on_the_gpu_are_float64_and_equal_the_cpu_ones():
    data = torch.from_numpy(np.random.default_rng(0).normal(3.0, 2.0, size=(20000, 288)))
    on_gpu = GaussianStats(288, device="cuda").update(data[:7000].cuda()).update(data[7000:])
    on_cpu = GaussianStats.from_samples(data)
    assert on_gpu.device.type == "cuda" and on_gpu.scatter.dtype == torch.float64
    assert relative_error(on_gpu.mean, on_cpu.mean) < 1e-13
    assert relative_error(on_gpu.covariance, on_cpu.covariance) < 1e-12


@pytest.mark.parametrize("stochastic", ["never", "always"])
def test_the_gaussian_map_on_the_gpu_equals_the_cpu_one(stochastic):
    rng = np.random.default_rng(1)
    source = torch.from_numpy(rng.normal(size=(5000, 12)) @ rng.normal(size=(12, 12)))
    target = torch.from_numpy(rng.normal(size=(5000, 12)) * 2 + 1)
    s, t = GaussianStats.from_samples(source), GaussianStats.from_samples(target)
    ot_map = fit_gaussian_map(s.mean, s.covariance, t.mean, t.covariance, stochastic=stochastic)
    noise = torch.from_numpy(rng.normal(size=source.shape))
    on_cpu = ot_map(source, noise)
    on_gpu = ot_map.to("cuda")(source.cuda(), noise.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float64
    assert relative_error(on_gpu, on_cpu) < 1e-12


def test_latent_transport_on_the_gpu_matches_the_cpu(taef2, crops):
    restored, natural = [p**1.5 for p in crops[:4]], crops[4:]
    outputs, fitted = {}, {}
    for device in ("cpu", "cuda"):
        vae = load_autoencoder(taef2, device=device, dtype="float32")
        plain = GaussianOTTransformer(stochastic="never")
        dot = LatentOTTransformer(vae=vae, device=device, transport=plain, random_state=0)
        dot.fit(restored, natural)
        fitted[device] = dot
        outputs[device] = np.stack(dot.transform(restored))
    gpu = fitted["cuda"]
    assert gpu.restored_stats_.device.type == "cuda"
    assert gpu.restored_stats_.scatter.dtype == torch.float64
    # cuDNN may run float32 convolutions in TF32 (10-bit mantissa): agreement to about 1e-3.
    assert relative_error(gpu.natural_stats_.mean, fitted["cpu"].natural_stats_.mean) < 1e-3
    assert np.abs(outputs["cuda"] - outputs["cpu"]).mean() < 1e-3


def test_auto_dtype_is_float16_on_the_gpu_and_half_precision_stays_close(taef2, crops):
    restored, natural = [p**1.5 for p in crops[:4]], crops[4:]
    results = {}
    for dtype in ("float32", "auto", "bfloat16"):
        vae = taef2 if dtype == "auto" else load_autoencoder(taef2, device="cuda", dtype=dtype)
        dot = LatentOTTransformer(vae=vae, device="cuda", random_state=0)
        dot.fit(restored, natural)
        results[dtype] = np.stack(dot.transform(restored))
        if dtype == "auto":
            assert dot._autoencoder().dtype == torch.float16
        assert results[dtype].dtype == np.float32 and np.isfinite(results[dtype]).all()
    # Half precision moves pixels by less than one 8-bit grey level on average.
    assert np.abs(results["auto"] - results["float32"]).mean() < 1 / 255
    assert np.abs(results["bfloat16"] - results["float32"]).mean() < 2 / 255


def test_the_same_random_state_gives_the_same_output_on_the_gpu(taef2, crops):
    def run(seed: int) -> np.ndarray:
        noisy = GaussianOTTransformer(stochastic="always")
        dot = LatentOTTransformer(vae=taef2, device="cuda", transport=noisy, random_state=seed)
        return np.stack(dot.fit(crops[:4], crops[4:]).transform(crops[:2]))

    first = run(7)
    assert np.array_equal(run(7), first)
    assert not np.array_equal(run(8), first)


def test_tiles_match_one_pass_on_the_gpu_at_1024_px(taef2, photos):
    large = Image.fromarray(photos["coffee"]).resize((1024, 1024), Image.BICUBIC)
    image = torch.from_numpy(np.asarray(large, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    untiled = load_autoencoder(taef2, device="cuda", tile_size=None)
    tiled = load_autoencoder(taef2, device="cuda", tile_size=512)
    whole = untiled.decode(untiled.encode(image.cuda()))
    in_tiles = tiled.decode(tiled.encode(image.cuda()))
    assert (whole - in_tiles).abs().mean() < 1e-3
    torch.cuda.reset_peak_memory_stats()
    tiled.decode(tiled.encode(image.cuda()))
    tiled_peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    untiled.decode(untiled.encode(image.cuda()))
    assert tiled_peak < torch.cuda.max_memory_allocated()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_nccl_exchange_of_statistics_in_a_one_rank_group():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1, timeout=timedelta(seconds=60))
    try:
        local = GaussianStats.from_samples(torch.randn(100, 6, dtype=torch.float64))
        with synchronize_fit(timeout=60):
            (merged,) = gather_stats([local])
        assert merged.device.type == "cpu"  # back on the input's device after a GPU exchange
        assert merged == local
    finally:
        dist.destroy_process_group()
