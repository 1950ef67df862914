"""The allocator policy (latent_ot.memory): freed memory kept for reuse inside a block and given
back after it, what it leaves behind, and how a user declines it."""

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latent_ot
from latent_ot import LatentOTTransformer, memory
from latent_ot.autoencoders import PixelAutoencoder, load_autoencoder
from latent_ot.devices import keep_freed_cpu_memory, reusing_freed_cpu_memory

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


class RecordingLibc:
    """Stands in for glibc: records every allocator call, changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = RecordingLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: fake)
    for name in (memory.REUSE_ENV, "GLIBC_TUNABLES", *memory._MALLOC_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_a_block_says_what_it_leaves_behind(libc):
    with reusing_freed_cpu_memory() as reusing:
        assert reusing is True
    m_mmap, m_trim, int_max = -3, -1, 2**31 - 1
    assert libc.calls == [
        ("mallopt", m_mmap, int_max),
        ("mallopt", m_trim, int_max),
        # glibc's thresholds cannot be read back: left where its own adaptation takes them
        ("mallopt", m_mmap, memory.MMAP_THRESHOLD_AFTER),
        ("mallopt", m_trim, memory.TRIM_THRESHOLD_AFTER),
        ("malloc_trim", 0),
    ]
    assert (memory.MMAP_THRESHOLD_AFTER, memory.TRIM_THRESHOLD_AFTER) == (32 * 2**20, 64 * 2**20)


@pytest.mark.parametrize("value", ["0", "false", "off", "No"])
def test_declining_the_policy_means_no_allocator_call_at_all(libc, monkeypatch, value):
    monkeypatch.setenv(memory.REUSE_ENV, value)
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(2)]
    LatentOTTransformer(vae="pixel").fit(images, images).transform(images)
    with reusing_freed_cpu_memory() as reusing:
        assert reusing is False
    assert keep_freed_cpu_memory() is False
    assert libc.calls == []


def test_fit_and_transform_each_run_in_one_block_and_autoencoder_passes_open_none(monkeypatch):
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

    monkeypatch.setattr(memory, "reusing_freed_cpu_memory", recording)
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(3)]
    dot = LatentOTTransformer(vae="pixel", batch_size=1).fit(images, images[:2])
    assert depths_entered == [1]  # one block for the whole call, none per encode
    depths_entered.clear()
    dot.transform(images)
    assert depths_entered == [1]


def test_a_loop_of_calls_in_the_operators_block_gives_memory_back_once(libc):
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(3)]
    dot = LatentOTTransformer(vae="pixel").fit(images, images)
    libc.calls.clear()
    with dot.reusing_freed_memory() as reusing:
        assert reusing is True
        for image in images:
            dot.transform(image)
        assert libc.calls == [("mallopt", -3, 2**31 - 1), ("mallopt", -1, 2**31 - 1)]
    assert [call[0] for call in libc.calls].count("malloc_trim") == 1  # not once per call


def test_the_transform_command_runs_its_files_in_one_block(libc, tmp_path):
    from latent_ot.cli import main

    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(3)]
    operator = tmp_path / "op.safetensors"
    LatentOTTransformer(vae="pixel").fit(images, images).save(operator)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, image in enumerate(images):
        Image.fromarray((image * 255).astype(np.uint8)).save(inputs / f"{index}.png")
    libc.calls.clear()
    assert main(["transform", str(operator), str(inputs), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert [call[0] for call in libc.calls].count("malloc_trim") == 1


def test_the_policy_suits_the_taesd_family_and_not_the_sd_vae(tiny_kl_model, libc):
    kl = load_autoencoder(tiny_kl_model)
    assert not memory.suits(kl)
    with memory.reusing_freed_memory(kl) as reusing:
        assert reusing is False
    assert libc.calls == []
    assert memory.suits(load_autoencoder("taef2"))
    with memory.reusing_freed_memory(PixelAutoencoder()) as reusing:
        assert reusing is True
    assert len(libc.calls) == 5


def test_the_autoencoder_interface_has_no_allocator_members():
    from latent_ot.autoencoders import Autoencoder

    allocator_words = ("reus", "freed", "malloc", "allocator")
    assert not [n for n in dir(Autoencoder) if any(word in n for word in allocator_words)]


def test_only_the_memory_module_calls_the_allocator():
    package = Path(latent_ot.__file__).parent
    callers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if "mallopt" in path.read_text() or "malloc_trim" in path.read_text()
    }
    assert callers == {"memory.py"}
