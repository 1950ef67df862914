"""The device and dtype rules ("auto" per machine, LOCAL_RANK, errors naming the argument), and
the CPU allocator settings: for a block of work and for the whole process."""

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latent_ot import LatentOTTransformer, autoencoders
from latent_ot.autoencoders import PixelAutoencoder, load_autoencoder
from latent_ot.devices import (
    keep_freed_cpu_memory,
    resolve_device,
    resolve_dtype,
    reusing_freed_cpu_memory,
)


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


# The probes run in a child process: the settings are process-wide, and must not touch the
# suite's. Each prints how many MiB of a freed 256 MiB block stay resident.
FREED_MEMORY_PROBE = """
import sys
from pathlib import Path

from latent_ot.devices import keep_freed_cpu_memory, reusing_freed_cpu_memory


def resident_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def kept_after_free():
    before = resident_mib()
    block = bytearray(256 * 2**20)
    block[:: 4096] = bytes(len(block) // 4096)  # every page written: resident for sure
    del block
    return round(resident_mib() - before)


if sys.argv[1] == "block":
    before = resident_mib()
    with reusing_freed_cpu_memory() as reusing:
        with reusing_freed_cpu_memory():
            pass  # an inner block ending must not end the outer one
        inside = kept_after_free()
    print(reusing, inside, round(resident_mib() - before))
else:
    applied = keep_freed_cpu_memory() if sys.argv[1] == "keep" else None
    print(applied, kept_after_free())
"""

needs_glibc = pytest.mark.skipif(
    not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc",
    reason="needs Linux with glibc",
)


def probe_freed_memory(mode: str, **environment: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", FREED_MEMORY_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **environment},
    )
    return result.stdout.split()


@needs_glibc
def test_keep_freed_cpu_memory_keeps_a_freed_block_resident_for_reuse():
    # By default glibc hands a 256 MiB block back to the system as soon as it is freed.
    applied, kept_mib = probe_freed_memory("default")
    assert (applied, float(kept_mib)) == ("None", pytest.approx(0, abs=32))
    applied, kept_mib = probe_freed_memory("keep")
    assert applied == "True"
    assert float(kept_mib) == pytest.approx(256, abs=32)


@needs_glibc
def test_a_reuse_block_keeps_freed_memory_inside_and_gives_it_back_at_its_end():
    reusing, inside_mib, after_mib = probe_freed_memory("block")
    assert reusing == "True"
    assert float(inside_mib) == pytest.approx(256, abs=32)  # kept, though an inner block ended
    assert float(after_mib) == pytest.approx(0, abs=32)  # malloc_trim gave it back


@needs_glibc
def test_a_reuse_block_leaves_the_users_own_malloc_settings_alone():
    # Any malloc setting of the user's turns the block off; here glibc's default top pad.
    reusing, inside_mib, _ = probe_freed_memory("block", MALLOC_TOP_PAD_="131072")
    assert (reusing, float(inside_mib)) == ("False", pytest.approx(0, abs=32))


def test_the_allocator_settings_do_nothing_off_the_cpu_or_off_glibc(monkeypatch):
    with reusing_freed_cpu_memory(torch.device("cuda")) as reusing:
        assert reusing is False
    monkeypatch.setattr(sys, "platform", "darwin")
    with reusing_freed_cpu_memory("cpu") as reusing:
        assert reusing is False
    assert keep_freed_cpu_memory() is False


def test_fit_and_transform_each_run_their_autoencoder_passes_in_one_reuse_block(monkeypatch):
    depth, depths_entered = [0], []

    @contextlib.contextmanager
    def recording(device="cpu"):
        assert torch.device(device).type == "cpu"
        depth[0] += 1
        depths_entered.append(depth[0])
        try:
            yield True
        finally:
            depth[0] -= 1

    monkeypatch.setattr(autoencoders, "reusing_freed_cpu_memory", recording)
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(3)]
    dot = LatentOTTransformer(vae="pixel", batch_size=1).fit(images, images[:2])
    assert depths_entered == [1] + [2] * 5  # one block for the call, 5 encodes inside it
    depths_entered.clear()
    dot.transform(images)
    assert depths_entered == [1] + [2] * 6  # encode + decode of 3 batches


def test_the_sd_vae_does_not_keep_freed_memory(tiny_kl_model):
    kl = load_autoencoder(tiny_kl_model)
    with kl.reusing_freed_memory() as reusing:
        assert reusing is False
    with PixelAutoencoder().reusing_freed_memory() as reusing:
        assert reusing is (platform.libc_ver()[0] == "glibc" and sys.platform == "linux")
