"""latent_ot.memory: the memory budget read from the machine (and the tiling it decides); the
allocator policy: freed memory kept for reuse inside a block and given back after it, what it
leaves behind, and how a user declines it."""

import contextlib
import copy
import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latent_ot
from latent_ot import LatentOTTransformer, memory
from latent_ot.autoencoders import (
    DiffusersKLAutoencoder,
    PixelAutoencoder,
    TAESDAutoencoder,
    load_autoencoder,
)
from latent_ot.autoencoders.taesd import _taesd_decoder, _taesd_encoder
from latent_ot.memory import (
    AUTO_BUDGET_FRACTIONS,
    FALLBACK_MEMORY_BUDGETS,
    auto_memory_budget,
    available_memory,
    keep_freed_cpu_memory,
    reusing_freed_cpu_memory,
)

# The probes run in a child process: the settings are process-wide, and must not touch the
# suite's. Each prints how many MiB of a freed 256 MiB block stay resident.
FREED_MEMORY_PROBE = """
import sys
from pathlib import Path

from latent_ot.memory import keep_freed_cpu_memory, reusing_freed_cpu_memory


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


# --------------------------------------------------------------------------------------------
# The memory budget, read from the machine
# --------------------------------------------------------------------------------------------

# /proc/meminfo as Linux writes it (the head of a real one).
MEMINFO = """MemTotal:       24731400 kB
MemFree:        19989776 kB
MemAvailable:   22820208 kB
Buffers:           60472 kB
Cached:          2926468 kB
"""


def meminfo(available_bytes: int) -> str:
    assert available_bytes % 1024 == 0  # the file counts kB
    return f"MemTotal: 99999999 kB\nMemAvailable: {available_bytes // 1024} kB\nCached: 1 kB\n"


def available_for(budget: int) -> int:
    """The least MemAvailable (whole kB) whose CPU budget is at least ``budget`` bytes."""
    kilobytes = -(-budget // 1024)
    while int(kilobytes * 1024 * AUTO_BUDGET_FRACTIONS["cpu"]) < budget:
        kilobytes += 1
    return kilobytes * 1024


@pytest.fixture
def machine(monkeypatch):
    """The platform as latent_ot.memory reads it, made up: the files it reads (path -> text),
    no psutil, no sysconf, no CUDA."""
    files: dict[str, str] = {}
    monkeypatch.setattr(memory, "_read_text", files.get)
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError

    def no_cuda(*_args):
        raise AssertionError("Torch not compiled with CUDA enabled")

    def no_sysconf(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(memory.os, "sysconf", no_sysconf)
    monkeypatch.setattr(torch.cuda, "mem_get_info", no_cuda)
    return files


def small_taesd():
    """A random TAESD of width 8 without pooling: tiles with context match one pass."""
    torch.manual_seed(0)
    return TAESDAutoencoder(
        _taesd_encoder(8, 4, None).state_dict(), _taesd_decoder(8, 4, None).state_dict()
    )


def count_calls(module):
    """Record the input shape of every call of ``module``."""
    shapes = []
    module.register_forward_hook(lambda _module, inputs, _output: shapes.append(inputs[0].shape))
    return shapes


def test_meminfo_gives_mem_available_in_bytes():
    assert memory._meminfo_available(MEMINFO) == 22820208 * 1024
    old_kernel = MEMINFO.replace("MemAvailable:   22820208 kB\n", "")
    assert memory._meminfo_available(old_kernel) is None


def test_the_cpu_budget_is_the_fraction_of_mem_available(machine):
    machine["/proc/meminfo"] = MEMINFO
    assert available_memory("cpu") == 22820208 * 1024
    assert AUTO_BUDGET_FRACTIONS["cpu"] == 0.8
    assert auto_memory_budget("cpu") == int(22820208 * 1024 * 0.8)
    assert auto_memory_budget(torch.device("cpu")) == int(22820208 * 1024 * 0.8)


def test_a_cgroup_v2_limit_caps_the_cpu_budget(machine):
    # A container sees the host's MemAvailable; its own limit is in its cgroup (or a parent).
    machine["/proc/meminfo"] = meminfo(20 * 2**30)
    machine["/proc/self/cgroup"] = "0::/user.slice/app.scope\n"
    machine["/sys/fs/cgroup/user.slice/app.scope/memory.max"] = "max\n"  # no limit of its own
    machine["/sys/fs/cgroup/user.slice/app.scope/memory.current"] = "1000\n"
    machine["/sys/fs/cgroup/user.slice/memory.max"] = "3000000000\n"
    machine["/sys/fs/cgroup/user.slice/memory.current"] = "2000000000\n"
    # Inactive file cache is reclaimed before the limit bites: it counts as free.
    machine["/sys/fs/cgroup/user.slice/memory.stat"] = "anon 1\ninactive_file 500000000\n"
    assert available_memory("cpu") == 3_000_000_000 - (2_000_000_000 - 500_000_000)
    assert auto_memory_budget("cpu") == 1_200_000_000
    machine["/sys/fs/cgroup/memory.max"] = "1000000000\n"  # the root: a tighter limit
    machine["/sys/fs/cgroup/memory.current"] = "900000000\n"
    assert available_memory("cpu") == 100_000_000
    machine["/sys/fs/cgroup/memory.current"] = "1200000000\n"  # over the limit: nothing free
    assert available_memory("cpu") == 0 and auto_memory_budget("cpu") == 1


def test_a_cgroup_v1_limit_caps_the_cpu_budget_and_no_limit_leaves_meminfo(machine):
    machine["/proc/meminfo"] = meminfo(20 * 2**30)
    machine["/proc/self/cgroup"] = "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n"
    directory = "/sys/fs/cgroup/memory/docker/abc"
    machine[f"{directory}/memory.limit_in_bytes"] = str(4 * 2**30)
    machine[f"{directory}/memory.usage_in_bytes"] = str(3 * 2**30)
    machine[f"{directory}/memory.stat"] = f"cache 5\ntotal_inactive_file {2**30}\n"
    assert available_memory("cpu") == 2 * 2**30
    # cgroup v1's "no limit" is the largest page-aligned int64.
    machine[f"{directory}/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert available_memory("cpu") == 20 * 2**30


def test_without_meminfo_psutil_then_sysconf_are_read(machine, monkeypatch):
    fake_psutil = types.SimpleNamespace(
        virtual_memory=lambda: types.SimpleNamespace(available=3 * 2**30)
    )
    monkeypatch.setitem(sys.modules, "psutil", fake_psutil)
    assert available_memory("cpu") == 3 * 2**30
    monkeypatch.setitem(sys.modules, "psutil", None)
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
    assert available_memory("cpu") == 4096 * 1000


def test_the_budget_falls_back_to_a_constant_where_nothing_can_be_read(machine):
    assert available_memory("cpu") is None and available_memory("cuda") is None
    assert auto_memory_budget("cpu") == FALLBACK_MEMORY_BUDGETS["cpu"] == 2 * 10**9
    assert auto_memory_budget("cuda:1") == FALLBACK_MEMORY_BUDGETS["cuda"] == 6 * 10**9
    assert available_memory("meta") is None
    assert auto_memory_budget("meta") == FALLBACK_MEMORY_BUDGETS["cpu"]
    machine["/proc/meminfo"] = "MemTotal: 1 kB\n"  # readable, but without MemAvailable
    assert auto_memory_budget("cpu") == 2 * 10**9


def test_the_cuda_budget_is_the_fraction_of_free_memory_and_torchs_unused_cache(
    machine, monkeypatch
):
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return 40 * 2**30, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 6 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * 2**30)
    assert available_memory("cuda:1") == 44 * 2**30
    assert auto_memory_budget("cuda:1") == 22 * 2**30
    assert asked == [torch.device("cuda:1")] * 2


def test_auto_tiling_follows_what_the_machine_has_free_at_each_pass(machine):
    ae = small_taesd()
    assert ae.estimated_memory(1, 1) == 6 * 8 * 4  # bytes per pixel, the budget's unit
    one = ae.estimated_memory(256, 256)
    machine["/proc/meminfo"] = meminfo(available_for(one))  # budget: one 256 px image
    assert one <= ae.memory_budget < one + 1024
    assert not ae.will_tile(256, 256) and ae.will_tile(256, 264)
    machine["/proc/meminfo"] = meminfo(available_for(one) - 1024)  # the same, less free
    assert ae.will_tile(256, 256)
    # Tiles take at most half the budget: a 600 px square at 192 B per pixel.
    machine["/proc/meminfo"] = meminfo(available_for(2 * 192 * 600 * 600))
    assert ae.tile_size == 600 and ae.will_tile(1024, 1024) and not ae.will_tile(600, 600)
    machine["/proc/meminfo"] = meminfo(64 * 2**30)  # plenty: no tiling, the largest CPU tile
    assert ae.tile_size == 1024 and not ae.will_tile(4096, 4096)
    # The user's own budget wins over the machine.
    ae.set_tiling("auto", memory_budget=one)
    assert ae.memory_budget == one and ae.will_tile(256, 264)


def test_auto_tiling_on_cuda_follows_the_devices_free_memory(machine, monkeypatch):
    ae = small_taesd()
    monkeypatch.setattr(ae, "device", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    free = 4 * 192 * 1200 * 1200  # under the CUDA tile cap of 2048 px: 1200 px tiles
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 2 * free))
    assert ae.memory_budget == free // 2 and ae.tile_size == 1200
    assert not ae.will_tile(1600, 1600) and ae.will_tile(2048, 2048)


def test_the_sd_vae_runs_1024_px_whole_with_the_issues_free_memory_and_tiles_with_less(
    machine, tiny_kl_model
):
    ae = DiffusersKLAutoencoder(copy.deepcopy(tiny_kl_model))
    # The Stable Diffusion VAE's estimate: this one's scaled to a full-resolution width of 128.
    sd_vae_1024 = ae.estimated_memory(1024, 1024) * 128 // ae.model.config.block_out_channels[0]
    machine["/proc/meminfo"] = meminfo(24 * 10**9 // 1024 * 1024)  # the issue's machine
    assert sd_vae_1024 < ae.memory_budget
    machine["/proc/meminfo"] = meminfo(4 * 10**9 // 1024 * 1024)
    assert sd_vae_1024 > ae.memory_budget
    # 2048 px (15.8 GB estimated) runs whole where 22 GB are available, as the plain pass did.
    sd_vae_2048 = ae.estimated_memory(2048, 2048) * 128 // ae.model.config.block_out_channels[0]
    machine["/proc/meminfo"] = meminfo(22 * 10**9 // 1024 * 1024)
    assert 15 * 10**9 < sd_vae_2048 < ae.memory_budget
    # The decision itself, on this small model: one pass, then diffusers' tiles.
    calls = count_calls(ae.model.encoder.conv_in)
    machine["/proc/meminfo"] = meminfo(available_for(ae.estimated_memory(64, 64)))
    whole = ae.encode(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert [tuple(shape[-2:]) for shape in calls] == [(64, 64)]
    machine["/proc/meminfo"] = meminfo(1024)  # the smallest tiles "auto" makes: 256 px
    tiled = ae.encode(torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)))
    assert len(calls) > 2 and max(max(shape[-2:]) for shape in calls[1:]) <= 256
    assert whole.shape == (1, 4, 32, 32) and tiled.shape == (1, 4, 256, 256)


def test_tiled_and_whole_passes_agree_whichever_the_budget_decides(machine):
    ae = small_taesd()
    images = torch.rand(2, 3, 320, 264, generator=torch.Generator().manual_seed(1))
    reference = small_taesd().set_tiling(None)
    expected_latents = reference.encode(images)
    expected = reference.decode(expected_latents)

    machine["/proc/meminfo"] = meminfo(64 * 2**30)
    calls = count_calls(ae.encoder[0])
    latents, decoded = ae.encode(images), ae.decode(expected_latents)
    assert [tuple(shape) for shape in calls] == [(2, 3, 320, 264)]  # one pass, batch and all
    assert torch.equal(latents, expected_latents) and torch.equal(decoded, expected)

    calls.clear()
    machine["/proc/meminfo"] = meminfo(1024)  # the smallest tiles, 256 px with 128 px overlap
    latents, decoded = ae.encode(images), ae.decode(expected_latents)
    assert len(calls) == 2 * 4 and all(max(shape[-2:]) <= 256 for shape in calls)
    torch.testing.assert_close(latents, expected_latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)
