"""Memory: how much an autoencoder pass may take, read from the machine; and the allocator
policy, by which CPU autoencoder passes reuse the memory they free (glibc only).

The budget: ``memory_budget="auto"`` of
:meth:`~latent_ot.autoencoders.Autoencoder.set_tiling` is :func:`auto_memory_budget`,
:data:`AUTO_BUDGET_FRACTIONS` of the memory free on the device at the moment an autoencoder
decides whether to tile (:func:`available_memory`), so that an image runs in one pass wherever
its pass fits, and in tiles only where it would not. Where nothing can be read, the budget is
:data:`FALLBACK_MEMORY_BUDGETS`. Since it follows the machine, the choice between one pass and
tiles can differ between machines or runs; the TAESD family's tiles match one pass to float
precision, the Stable Diffusion VAE's do not exactly (GroupNorm and attention see one tile), so
pass an explicit ``memory_budget`` or ``tile_size`` where its outputs must be the same
everywhere.

The allocator policy: this is the one module of latent-ot that changes native, process-wide
state, and it says so.

Why: a CPU autoencoder frees and allocates each layer's activations, tens of megabytes, many
times per image. glibc's ``malloc`` returns blocks that large to the system as soon as they
are freed, so every new one arrives as fresh pages that the kernel must zero, a large share
of a TAESD-family pass on the CPU (``benchmarks/README.md`` times it with the policy on and
off).

What: :class:`~latent_ot.LatentOTTransformer`'s ``fit``, ``partial_fit``, ``transform`` and
``sweep`` run inside :func:`reusing_freed_memory`, which, for autoencoders that it suits,
raises glibc's mmap and trim thresholds (``mallopt``) so that freed blocks are reused, and at
its end calls ``malloc_trim(0)`` so that the process does not stay at its peak. It suits the
TAESD family and the pixel identity; not the Stable Diffusion VAE, whose kept heap would grow
past what its tiling saves (:func:`suits`). A loop of calls runs in one block with
``LatentOTTransformer.reusing_freed_memory()``, as ``latent-ot transform`` runs its files.

What it leaves behind: glibc's thresholds cannot be read back, so they cannot be restored
exactly. After a block they are left where glibc's own adaptation takes them during an
autoencoder pass outside any block: a block of 32 MiB or more is mapped on its own, and free
heap above 64 MiB is trimmed (:data:`MMAP_THRESHOLD_AFTER`, :data:`TRIM_THRESHOLD_AFTER`).

How to decline: set the environment variable ``LATENT_OT_REUSE_FREED_MEMORY=0``
(:data:`REUSE_ENV`): no ``mallopt`` or ``malloc_trim`` call is then made at all. Nothing is
changed either off the CPU, off glibc (macOS, Windows, musl), or where the user chose glibc's
malloc settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``
or ``glibc.malloc`` tunables). :func:`keep_freed_cpu_memory` makes reuse permanent for the
whole process instead, for users who want it for every autoencoder and between calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch

__all__ = [
    "AUTO_BUDGET_FRACTIONS",
    "FALLBACK_MEMORY_BUDGETS",
    "MMAP_THRESHOLD_AFTER",
    "REUSE_ENV",
    "TRIM_THRESHOLD_AFTER",
    "auto_memory_budget",
    "available_memory",
    "keep_freed_cpu_memory",
    "reusing_freed_cpu_memory",
    "reusing_freed_memory",
    "suits",
]

# ---- the memory budget of an autoencoder pass -----------------------------------------------

AUTO_BUDGET_FRACTIONS: Mapping[str, float] = MappingProxyType({"cpu": 0.8, "cuda": 0.5})
"""The share of the free memory of a device that one autoencoder pass may take with
``memory_budget="auto"``, per device type (others: ``"cpu"``'s).

Why not all of it: the estimate that is compared with it
(:meth:`~latent_ot.autoencoders.Autoencoder.estimated_memory`) is a peak measured in one
setting, and the same pass may peak a little higher with another memory layout or allocator
state; the rest of the process needs room too (the images read and written, their latents,
the patch statistics); and free memory is a snapshot that other processes may take from while
the pass runs. Going over costs far more than tiling does: swapping, the kernel's
out-of-memory killer, or on CUDA an out-of-memory error.

Why 0.8 on the CPU: ``MemAvailable`` already leaves out what the kernel cannot reclaim, the
estimates matched the measured peaks of the package's own passes to within a few percent
(``benchmarks/README.md``, ``memory_budget.py``), and tiling an image that would have fit
costs a third more time with the Stable Diffusion VAE, so the budget should stop only short of
what the machine has. Why 0.5 on CUDA: the caching allocator's fragmentation and the
convolution algorithms' workspaces, which depend on the GPU and the library versions, add to
the estimate there, and an out-of-memory error ends the user's run. A tiled pass takes at most
half the budget per tile.
"""

FALLBACK_MEMORY_BUDGETS: Mapping[str, int] = MappingProxyType({"cpu": 2 * 10**9, "cuda": 6 * 10**9})
"""The budget in bytes per device type (others: ``"cpu"``) where the free memory cannot be
read (:func:`available_memory` is None): a machine without ``/proc/meminfo``, ``psutil`` or
``sysconf``, or a device type other than the CPU and CUDA.

The CPU's is enough to run common photo sizes in one pass with every adapter of this
package, TAEF2 and the Stable Diffusion VAE in float32; CUDA's runs the half-precision SD VAE
on 1024 px images in one pass.
"""

_MEMINFO = "/proc/meminfo"
_PROCESS_CGROUPS = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 writes "no limit" as a huge number (the largest page-aligned int64).
_NO_LIMIT = 2**60


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory free for this process on ``device`` now; None where it cannot be read.

    - CPU: ``MemAvailable`` of ``/proc/meminfo`` on Linux (free memory plus the cache the
      kernel can reclaim), else ``psutil.virtual_memory().available`` where psutil is
      installed (macOS, Windows), else ``sysconf`` free pages; and no more than the memory
      cgroups leave the process (a container's limit, which ``/proc/meminfo`` does not show):
      the least, over the process's cgroup and its ancestors, of its limit less its usage,
      counting inactive file cache as free (cgroup v2 ``memory.max``, ``memory.current``; v1
      ``memory.limit_in_bytes``, ``memory.usage_in_bytes``).
    - CUDA: the device's free memory (``torch.cuda.mem_get_info``) plus what torch's caching
      allocator holds unused, which this process can use again.
    - Other devices: None.

    Parameters
    ----------
    device : torch.device or str, default="cpu"

    Returns
    -------
    int or None

    Examples
    --------
    >>> available_memory("cpu") > 0  # doctest: +SKIP
    True
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _least(_system_available(), _cgroup_available())
    if device.type == "cuda":
        return _cuda_available(device)
    return None


def auto_memory_budget(device: torch.device | str = "cpu") -> int:
    """The bytes one autoencoder pass on ``device`` may take with ``memory_budget="auto"``.

    :data:`AUTO_BUDGET_FRACTIONS` of :func:`available_memory` (by device type), read now (at
    least one byte: with nothing free, every image is tiled as finely as tiling goes); where
    that cannot be read, :data:`FALLBACK_MEMORY_BUDGETS`.

    Parameters
    ----------
    device : torch.device or str, default="cpu"

    Returns
    -------
    int

    Examples
    --------
    >>> auto_memory_budget("meta") == FALLBACK_MEMORY_BUDGETS["cpu"]  # nothing to read
    True
    """
    device = torch.device(device)
    available = available_memory(device)
    if available is None:
        return FALLBACK_MEMORY_BUDGETS.get(device.type, FALLBACK_MEMORY_BUDGETS["cpu"])
    fraction = AUTO_BUDGET_FRACTIONS.get(device.type, AUTO_BUDGET_FRACTIONS["cpu"])
    return max(1, int(available * fraction))


def _least(*values: int | None) -> int | None:
    return min((value for value in values if value is not None), default=None)


def _read_text(path: str) -> str | None:
    """The text of a (kernel) file; None where it does not exist or cannot be read."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return None


def _meminfo_available(text: str) -> int | None:
    """``MemAvailable`` in bytes from the text of ``/proc/meminfo`` (in kB there); None if
    absent (kernels before 3.14)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields = value.split()
        if name.strip() == "MemAvailable" and fields and fields[0].isdigit():
            scale = 1024 if fields[1:] == ["kB"] else 1
            return int(fields[0]) * scale
    return None


def _system_available() -> int | None:
    text = _read_text(_MEMINFO)
    from_meminfo = None if text is None else _meminfo_available(text)
    if from_meminfo is not None:
        return from_meminfo
    # psutil before sysconf: its figure counts reclaimable cache, sysconf's free pages do not.
    return _psutil_available() or _sysconf_available()


def _psutil_available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.virtual_memory().available)
    except (OSError, AttributeError, RuntimeError):
        return None


def _sysconf_available() -> int | None:
    try:  # no os.sysconf on Windows; no SC_AVPHYS_PAGES on some systems
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def _cgroup_available() -> int | None:
    """What the process's memory cgroups (v1 or v2) still allow; None: no limit found."""
    text = _read_text(_PROCESS_CGROUPS)
    if text is None:
        return None
    room = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # the v2 hierarchy
            files = (_CGROUP_ROOT, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            files = (
                f"{_CGROUP_ROOT}/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        root, *names = files
        # Limits nest, so every ancestor counts; inside a container with its own cgroup
        # namespace the path is "/" and the mount's root is the container's cgroup.
        steps = [step for step in path.strip().split("/") if step and step != ".."]
        for depth in range(len(steps), -1, -1):
            room.append(_cgroup_room("/".join([root, *steps[:depth]]), *names))
    return _least(*room)


def _cgroup_room(directory: str, limit_name: str, usage_name: str, inactive: str) -> int | None:
    """Limit less usage of one cgroup, inactive file cache counted as free; None: no limit."""
    limit, usage = (_read_text(f"{directory}/{name}") for name in (limit_name, usage_name))
    if limit is None or usage is None or not limit.strip().isdigit():  # "max": no limit
        return None
    if int(limit) >= _NO_LIMIT or not usage.strip().isdigit():
        return None
    used = int(usage)
    stat = _read_text(f"{directory}/memory.stat") or ""
    for line in stat.splitlines():
        name, _, value = line.partition(" ")
        if name == inactive and value.strip().isdigit():
            used -= min(int(value), used)
            break
    return max(0, int(limit) - used)


def _cuda_available(device: torch.device) -> int | None:
    try:
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    except (AssertionError, RuntimeError, ValueError):  # torch without CUDA, no such device
        return None
    return int(free) + int(cached)


# ---- the allocator policy ------------------------------------------------------------------

REUSE_ENV = "LATENT_OT_REUSE_FREED_MEMORY"
"""Environment variable; ``0``, ``false``, ``no`` or ``off`` turn the policy off entirely."""

# mallopt parameters, from glibc's <malloc.h>, and the largest value they take (a C int).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_C_INT_MAX = 2**31 - 1

MMAP_THRESHOLD_AFTER = 32 * 2**20
"""glibc's mmap threshold after a block: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems, the
most its own adaptation grows it to, which the blocks an autoencoder pass frees take it to."""
TRIM_THRESHOLD_AFTER = 2 * MMAP_THRESHOLD_AFTER
"""glibc's trim threshold after a block: twice the mmap threshold, as glibc's adaptation sets."""

# Settings by which a user chooses glibc's allocator behaviour; where one is set, it stays.
_MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# Autoencoder classes whose kept heap outgrows what tiling saves (checked by name, so that this
# module does not import the adapters).
_UNSUITED = frozenset({"DiffusersKLAutoencoder"})

_lock = threading.Lock()
_depth = 0
_applied_for_blocks = False
_kept_process_wide = False


def declined() -> bool:
    """Whether the user turned the policy off with :data:`REUSE_ENV`."""
    return os.environ.get(REUSE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def suits(autoencoder: Any) -> bool:
    """Whether reusing freed memory suits ``autoencoder`` (not the Stable Diffusion VAE).

    With the SD VAE, diffusers' own tile loop frees activations of changing sizes tile after
    tile, and a heap that keeps them grows with every tile: the memory cost outweighs the
    speed.
    """
    return not any(cls.__name__ in _UNSUITED for cls in type(autoencoder).__mro__)


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (Linux), else None (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl has no such symbol)
    except (OSError, AttributeError):
        return None
    return libc


def _user_chose_malloc_settings() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc." in tunables or any(name in os.environ for name in _MALLOC_ENVIRONMENT)


def _set_thresholds(libc: Any, mmap_threshold: int, trim_threshold: int) -> bool:
    # A high mmap threshold serves every block from the heap; the trim threshold then keeps
    # freed heap memory instead of releasing it. Either alone changes nothing.
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def keep_freed_cpu_memory() -> bool:
    """Keep memory that torch frees for reuse, for the whole process and every autoencoder.

    The same as setting the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` at start-up. The library already reuses freed memory while its
    calls run (:func:`reusing_freed_memory`); this makes it permanent, so that memory also
    stays between calls and the Stable Diffusion VAE reuses it too. The cost is that resident
    memory stays at its peak instead of shrinking between images, and with the SD VAE that
    peak grows (``benchmarks/README.md``). Never called by the library itself.

    Returns
    -------
    bool
        True if applied; False off glibc, when refused, or when :data:`REUSE_ENV` declines.

    Examples
    --------
    >>> keep_freed_cpu_memory()  # doctest: +SKIP
    True
    """
    global _kept_process_wide
    libc = None if declined() else _glibc()
    if libc is None:
        return False
    with _lock:
        _kept_process_wide = _set_thresholds(libc, _C_INT_MAX, _C_INT_MAX)
        return _kept_process_wide


@contextlib.contextmanager
def reusing_freed_cpu_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Within the block, keep memory that is freed for reuse; give it back to the system after.

    Blocks nest, also across threads: the first to start sets glibc's thresholds, the last to
    end trims and leaves them at :data:`MMAP_THRESHOLD_AFTER` / :data:`TRIM_THRESHOLD_AFTER`.
    Nothing is changed off the CPU, off glibc, where the user chose glibc's malloc settings,
    after :func:`keep_freed_cpu_memory`, or when :data:`REUSE_ENV` declines the policy.

    Parameters
    ----------
    device : torch.device or str, default="cpu"
        Where the computation in the block runs (the GPU's own allocator caches).

    Yields
    ------
    bool
        Whether freed memory is kept for reuse inside the block.

    Examples
    --------
    >>> with reusing_freed_cpu_memory():
    ...     activations = torch.zeros(2**23)
    """
    global _depth, _applied_for_blocks
    off = torch.device(device).type != "cpu" or declined() or _user_chose_malloc_settings()
    libc = None if off else _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            _applied_for_blocks = not _kept_process_wide and _set_thresholds(
                libc, _C_INT_MAX, _C_INT_MAX
            )
        _depth += 1
        reusing = _kept_process_wide or _applied_for_blocks
    try:
        yield reusing
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _applied_for_blocks and not _kept_process_wide:
                _set_thresholds(libc, MMAP_THRESHOLD_AFTER, TRIM_THRESHOLD_AFTER)
                libc.malloc_trim(0)


def reusing_freed_memory(autoencoder: Any) -> contextlib.AbstractContextManager[bool]:
    """The policy for work with ``autoencoder``: a reuse block where it suits, else nothing.

    What the estimators wrap around ``fit``, ``transform`` and ``sweep``; wrap your own loop
    of encode/decode calls in it to get the same speed.

    Examples
    --------
    >>> from latent_ot.autoencoders import load_autoencoder
    >>> with reusing_freed_memory(load_autoencoder("pixel")):
    ...     pass
    """
    if not suits(autoencoder):
        return contextlib.nullcontext(False)
    return reusing_freed_cpu_memory(autoencoder.device)
