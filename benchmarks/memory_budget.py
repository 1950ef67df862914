"""The package's encode + decode against a plain untiled one, with the memory budget read from
the machine (issue 25): time and peak memory of each, per autoencoder and image size.

*package* is the path ``transform`` takes through the autoencoder: ``load_autoencoder`` with
its defaults (``tile_size="auto"``, the budget read from the machine, channels-last on the CPU),
``encode`` then ``decode``, inside the allocator policy the estimators apply. *plain* is the
same model called by hand, as the official code does: ``vae.encode(x).latent_dist.mean`` and
``vae.decode(z).sample`` for the Stable Diffusion VAE's configuration (random weights, seeded),
``encoder(x)`` and ``decoder(z)`` for TAEF2, in one pass, never tiled.

Each pass runs in a child process of its own, so that one pass's peak does not hide another's;
the two take turns ``--repeats`` times and the best time counts. The peak is the child's
resident memory high-water mark (``ru_maxrss``) above what it held before the pass (on CUDA:
the most allocated on the device above what was allocated before). Where the plain pass is
estimated not to fit in the memory available now, it is not run and the table says so.

Usage::

    python benchmarks/memory_budget.py --threads 1                      # CPU: 512 and 1024 px
    python benchmarks/memory_budget.py --sizes 2048 --models taef2 --repeats 1
    python benchmarks/memory_budget.py --device cuda --dtype float16 --sizes 1024 2048 4096
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("sd-vae", "taef2")
PATHS = ("package", "plain")
# The plain pass runs only where its estimate is under this share of the memory available:
# the rest is for the model, the input and output, and the other programs on the machine.
PLAIN_FITS_SHARE = 0.8


def build_model(name: str, device: str, dtype: str):
    """What ``transform`` is given: the SD VAE's configuration as a diffusers ``AutoencoderKL``
    (random weights, seeded), or the preset name ``"taef2"``."""
    if name == "taef2":
        return "taef2"
    import torch
    from diffusers import AutoencoderKL

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _speed_cases import SD_VAE_CONFIG

    torch.manual_seed(0)
    # nn.Module.to: diffusers' own logs a warning at every cast to a dtype.
    return torch.nn.Module.to(
        AutoencoderKL(**SD_VAE_CONFIG).eval(), device=device, dtype=getattr(torch, dtype)
    )


def package_pass(model, device: str, dtype: str):
    """``transform``'s way through the autoencoder: defaults, allocator policy and all."""
    from latent_ot import memory
    from latent_ot.autoencoders import load_autoencoder

    autoencoder = load_autoencoder(model, device=device, dtype=dtype)

    def run(images):
        with memory.reusing_freed_memory(autoencoder):
            return autoencoder.decode(autoencoder.encode(images))

    return autoencoder, run


def plain_pass(model, device: str, dtype: str):
    """The model called by hand in one pass, as the official code calls it."""
    import torch

    from latent_ot.autoencoders import load_autoencoder

    if model == "taef2":  # its two bare modules, in the layout they load in
        taef2 = load_autoencoder(
            "taef2", device=device, dtype=dtype, tile_size=None, memory_format="contiguous"
        )
        encoder, decoder = taef2.encoder, taef2.decoder

        def run(images):
            with torch.inference_mode():
                return decoder(encoder(images)).clamp(0, 1)

        return run

    def run(images):
        with torch.inference_mode():
            latents = model.encode(images * 2 - 1).latent_dist.mean
            return ((model.decode(latents).sample + 1) / 2).clamp(0, 1)

    return run


def resident_bytes() -> int:
    """The process's resident memory now (Linux), else its peak so far."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return peak_resident_bytes()


def peak_resident_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(case: dict) -> dict:
    """One pass of one path, in this (child) process: seconds and peak bytes above the start."""
    import torch

    device, dtype, size = case["device"], case["dtype"], case["size"]
    cuda = device.startswith("cuda")
    if case["threads"]:
        torch.set_num_threads(case["threads"])
    model = build_model(case["model"], device, dtype)
    tiled = False
    if case["path"] == "package":
        autoencoder, run = package_pass(model, device, dtype)
        tiled = autoencoder.will_tile(size, size)
    else:
        run = plain_pass(model, device, dtype)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, size, size, generator=generator).to(device, getattr(torch, dtype))
    run(images[..., :64, :64])  # the libraries' one-off setup, outside the measurement
    if cuda:
        run(images)  # the GPU's kernels for this size, outside the measurement
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resident_bytes()
    start = time.perf_counter()
    output = run(images)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_resident_bytes()) - before
    assert output.shape == images.shape
    return {"seconds": seconds, "peak": peak, "tiled": tiled}


def in_child(case: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        last = completed.stderr.strip().splitlines()[-1:] or [f"exit {completed.returncode}"]
        return {"error": last[0]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def plan(model: str, size: int, device: str, dtype: str) -> dict:
    """The package's estimate and budget, and whether the plain pass fits, read now."""
    from latent_ot import memory
    from latent_ot.autoencoders import load_autoencoder

    autoencoder = load_autoencoder(build_model(model, device, dtype), device=device, dtype=dtype)
    estimate = autoencoder.estimated_memory(size, size)
    available = memory.available_memory(device)
    return {
        "estimate": estimate,
        "budget": memory.auto_memory_budget(device),
        "plain_fits": available is None or estimate < PLAIN_FITS_SHARE * available,
    }


def measure(model: str, size: int, args) -> dict:
    case = {
        "model": model,
        "size": size,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
    }
    row = {"model": model, "size": size, **plan(model, size, args.device, args.dtype)}
    paths = PATHS if row["plain_fits"] else ("package",)
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    for _ in range(args.repeats):
        for path in paths:  # in turns: the machine's noise falls on both alike
            runs[path].append(in_child({**case, "path": path}))
    for path, results in runs.items():
        failed = [result["error"] for result in results if "error" in result]
        row[path] = (
            {"error": failed[0]}
            if failed
            else {
                "seconds": min(result["seconds"] for result in results),
                "peak": max(result["peak"] for result in results),
                "tiled": results[0]["tiled"],
            }
        )
    return row


def format_row(row: dict) -> str:
    package, plain = row["package"], row.get("plain")
    gb = 1e9
    cells = [
        f"{row['model']:<7}",
        f"{row['size']:>5}",
        f"{row['estimate'] / gb:>6.2f}",
        f"{row['budget'] / gb:>6.2f}",
    ]
    if "error" in package:
        return " | ".join([*cells, f"package failed: {package['error']}"])
    cells += [
        "tiles" if package["tiled"] else "whole",
        f"{package['seconds']:>8.2f}",
        f"{package['peak'] / gb:>6.2f}",
    ]
    if plain is None:
        cells += ["plain does not fit in the memory available: not run"]
    elif "error" in plain:
        cells += [f"plain failed: {plain['error']}"]
    else:
        ratio = package["seconds"] / plain["seconds"]
        cells += [f"{plain['seconds']:>8.2f}", f"{plain['peak'] / gb:>6.2f}", f"{ratio:>5.2f}x"]
    return " | ".join(cells)


HEADER = (
    "model   |  size | est GB | budget | pass  | package s |   peak | plain s  |   peak | ratio"
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=2, help="passes of each path, in turns")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    threads = args.threads or "torch's default"
    print(
        f"device {args.device}, {args.dtype}, threads {threads}; best of {args.repeats} in turns; "
        "GB = 1e9 bytes"
    )
    print("est: the package's estimate of one whole pass; peak: above the child's start")
    print(HEADER)
    rows = []
    for model in args.models:
        for size in args.sizes:
            rows.append(measure(model, size, args))
            print(format_row(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
