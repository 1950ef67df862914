"""Speed and memory of latent-ot next to its floor, the autoencoder itself.

Prints, per autoencoder and image size: encode and decode seconds, ``transform`` seconds and
its overhead ratio ``transform / (encode + decode)``, fit throughput against pure encode
throughput, and peak memory (CPU: max RSS of a fresh child process; GPU:
``torch.cuda.max_memory_allocated``). Then the Gaussian stage, ``GaussianOTTransformer``
fit + transform, against POT's ``ot.da.LinearTransport`` on the same data.

Every measurement runs in its own child process, so peak memory is that case's alone.

Run: ``python benchmarks/bench.py`` (all cases, minutes on 2 CPU cores), or pick cases with
``--autoencoders taef2 --sizes 512 1024 --skip-gaussian``; ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# The configuration of stabilityai/sd-vae-ft-mse, randomly initialised: same cost, no download.
SD_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}


def build_autoencoder(name: str, device: str, dtype: str | None):
    import torch
    from diffusers import AutoencoderKL

    from latent_ot.autoencoders import load_autoencoder

    if name == "taef2":
        vae = SHARED / "weights" / "taef2"
    else:
        torch.manual_seed(0)
        vae = AutoencoderKL(**SD_VAE_CONFIG).eval()
    return load_autoencoder(vae, device=device, dtype=dtype)


def timed(function, repeats: int) -> float:
    """Best of ``repeats`` wall-clock seconds (after a warm-up call when ``repeats > 1``)."""
    import torch

    if repeats > 1:
        function()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def run_image_case(case: dict) -> dict:
    """One autoencoder, one size, one kind of measurement; runs in a child process."""
    import torch

    from latent_ot import LatentOTTransformer

    torch.manual_seed(0)
    size, device = case["size"], case["device"]
    autoencoder = build_autoencoder(case["autoencoder"], device, case["dtype"])
    image = torch.rand(1, 3, size, size, device=device)
    result = {}
    if case["what"] == "floor":
        latents = autoencoder.encode(image)
        result["encode_s"] = timed(lambda: autoencoder.encode(image), case["repeats"])
        result["decode_s"] = timed(lambda: autoencoder.decode(latents), case["repeats"])
    elif case["what"] == "transform":
        operator = LatentOTTransformer(vae=autoencoder, device=device, random_state=0)
        fit_images = [torch.rand(3, size, size) for _ in range(2)]
        operator.fit(fit_images, [torch.rand(3, size, size) ** 2 for _ in range(2)])
        pixels = image[0].cpu()
        result["transform_s"] = timed(lambda: operator.transform(pixels), case["repeats"])
    elif case["what"] == "fit":
        images = [torch.rand(3, size, size) for _ in range(case["n_images"])]
        operator = LatentOTTransformer(vae=autoencoder, device=device, batch_size=1)
        seconds = timed(lambda: operator.fit(images, images), 1)
        result["fit_images_per_s"] = 2 * len(images) / seconds
        encode_all = lambda: [autoencoder.encode(im[None].to(device)) for im in images * 2]  # noqa: E731
        result["encode_images_per_s"] = 2 * len(images) / timed(encode_all, 1)
    result["peak_memory_gb"] = peak_memory_gb(device)
    return result


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def run_gaussian_case(case: dict) -> dict:
    """GaussianOTTransformer fit + transform against POT's LinearTransport, same data."""
    import numpy as np
    import ot

    from latent_ot import GaussianOTTransformer

    rng = np.random.default_rng(0)
    dim, n = case["dim"], case["n"]
    source = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    target = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim) + 1.0

    def ours():
        GaussianOTTransformer().fit(source, target=target).transform(source)

    def pot():
        ot.da.LinearTransport().fit(Xs=source, Xt=target).transform(Xs=source)

    ours_s, pot_s = timed(ours, case["repeats"]), timed(pot, case["repeats"])
    return {"latent_ot_s": ours_s, "pot_s": pot_s, "speedup": pot_s / ours_s}


def in_child(case: dict) -> dict:
    """Run ``case`` in a fresh interpreter; its peak memory is then its own."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def image_rows(args) -> list[dict]:
    rows = []
    for name in args.autoencoders:
        sizes = [s for s in args.sizes if name == "taef2" or s <= 1024]
        for size in sizes:
            base = {"autoencoder": name, "size": size, "device": args.device, "dtype": args.dtype}
            floor = in_child({**base, "what": "floor", "repeats": args.repeats})
            transform = in_child({**base, "what": "transform", "repeats": args.repeats})
            fit = in_child({**base, "what": "fit", "n_images": args.fit_images})
            row = {
                **base,
                **floor,
                "transform_s": transform["transform_s"],
                "overhead": transform["transform_s"] / (floor["encode_s"] + floor["decode_s"]),
                "floor_peak_gb": floor["peak_memory_gb"],
                "transform_peak_gb": transform["peak_memory_gb"],
                "fit_images_per_s": fit["fit_images_per_s"],
                "encode_images_per_s": fit["encode_images_per_s"],
                "fit_vs_encode": fit["fit_images_per_s"] / fit["encode_images_per_s"],
            }
            rows.append(row)
            print_row(row)
    return rows


def print_row(row: dict) -> None:
    print(
        f"{row['autoencoder']:>6} {row['size']:>5} px  encode {row['encode_s']:7.2f} s  "
        f"decode {row['decode_s']:7.2f} s  transform {row['transform_s']:7.2f} s  "
        f"overhead {row['overhead']:.3f}x  fit {row['fit_images_per_s']:.3f} img/s vs encode "
        f"{row['encode_images_per_s']:.3f} img/s ({row['fit_vs_encode']:.2f}x)  "
        f"peak {row['transform_peak_gb']:.2f} GB (floor {row['floor_peak_gb']:.2f} GB)",
        flush=True,
    )


def gaussian_rows(args) -> list[dict]:
    rows = []
    for dim in args.dims:
        row = {
            "dim": dim,
            "n": args.n,
            **in_child({"gaussian": True, "dim": dim, "n": args.n, "repeats": 2}),
        }
        rows.append(row)
        print(
            f"Gaussian stage d={dim:>4} n={args.n}: latent-ot {row['latent_ot_s']:.3f} s, "
            f"POT LinearTransport {row['pot_s']:.3f} s, speed-up {row['speedup']:.2f}x",
            flush=True,
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--autoencoders", nargs="+", default=["taef2", "sd-config"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="autoencoder dtype, e.g. float16 on CUDA")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-images", type=int, default=3)
    parser.add_argument("--dims", nargs="+", type=int, default=[36, 288, 800])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-gaussian", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.child:
        case = json.loads(args.child)
        result = run_gaussian_case(case) if case.get("gaussian") else run_image_case(case)
        print(json.dumps(result))
        return
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}",
        flush=True,
    )
    results = {
        "images": [] if args.skip_images else image_rows(args),
        "gaussian": [] if args.skip_gaussian else gaussian_rows(args),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
