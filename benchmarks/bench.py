"""Speed and memory of latent-ot next to its floor, the autoencoder itself.

Prints, per autoencoder and image size: encode and decode seconds, ``transform`` seconds and
its overhead ratio ``transform / (encode + decode)``, fit throughput against pure encode
throughput (same batch size), ``transform`` throughput, and peak memory (CPU: max RSS of a
fresh child process; GPU: ``torch.cuda.max_memory_allocated``, reset per case). Then writes
a crop of a 1024 px photo decoded in tiles and in one pass, to look at the seams. Then the
Gaussian stage, ``GaussianOTTransformer`` fit + transform, against POT's
``ot.da.LinearTransport`` on the same data: each library in its own child process, median of
five runs after a warm-up.

On the CPU every image measurement runs in its own child process, so peak memory is that
case's alone; on a GPU they run in this process (peak memory is reset per case).

Run: ``python benchmarks/bench.py`` (all cases, tens of minutes on 2 CPU cores), or pick
cases with ``--autoencoders taef2 --sizes 512 1024 --skip-gaussian``; on a GPU
``--device cuda --dtype float16 --batch-size 4 --fit-images 8 --repeats 3``.
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


def build_autoencoder(name: str, device: str, dtype: str | None, shared: str):
    import torch
    from diffusers import AutoencoderKL

    from latent_ot.autoencoders import load_autoencoder

    if name == "taef2":
        vae = Path(shared) / "weights" / "taef2"
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
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    autoencoder = build_autoencoder(case["autoencoder"], device, case["dtype"], case["shared"])
    image = torch.rand(1, 3, size, size, device=device)
    result = {}
    if case["what"] == "floor":
        latents = autoencoder.encode(image)
        result["encode_s"] = timed(lambda: autoencoder.encode(image), case["repeats"])
        result["decode_s"] = timed(lambda: autoencoder.decode(latents), case["repeats"])
    elif case["what"] == "transform":
        operator = LatentOTTransformer(
            vae=autoencoder,
            device=device,
            dtype=autoencoder.dtype,
            batch_size=case["batch_size"],
            random_state=0,
        )
        fit_images = [torch.rand(3, size, size) for _ in range(2)]
        operator.fit(fit_images, [torch.rand(3, size, size) ** 2 for _ in range(2)])
        pixels = image[0].cpu()
        result["transform_s"] = timed(lambda: operator.transform(pixels), case["repeats"])
        batch = [torch.rand(3, size, size) for _ in range(case["n_images"])]
        if len(batch) > 1:
            seconds = timed(lambda: operator.transform(batch), case["repeats"])
            result["transform_images_per_s"] = len(batch) / seconds
        else:
            result["transform_images_per_s"] = 1 / result["transform_s"]
    elif case["what"] == "fit":
        images = [torch.rand(3, size, size) for _ in range(case["n_images"])]
        batch = case["batch_size"]
        operator = LatentOTTransformer(
            vae=autoencoder, device=device, dtype=autoencoder.dtype, batch_size=batch
        )
        batches = [torch.stack(images[i : i + batch]) for i in range(0, len(images), batch)]
        # The first call of a new shape pays one-off setup (kernel choice, allocator growth):
        # taken here, so that fit and the plain encode that follows are both timed warm.
        autoencoder.encode(batches[0].to(device))
        seconds = timed(lambda: operator.fit(images, images), 1)
        result["fit_images_per_s"] = 2 * len(images) / seconds
        encode_all = lambda: [autoencoder.encode(b.to(device)) for b in batches * 2]  # noqa: E731
        result["encode_images_per_s"] = 2 * len(images) / timed(encode_all, 1)
    result["peak_memory_gb"] = peak_memory_gb(device)
    return result


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9  # reset at the start of each case
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def run_gaussian_case(case: dict) -> dict:
    """One library's Gaussian stage, fit + transform, on the same seeded data; median seconds."""
    import numpy as np

    rng = np.random.default_rng(0)
    dim, n = case["dim"], case["n"]
    source = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    target = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim) + 1.0
    if case["library"] == "latent-ot":
        from latent_ot import GaussianOTTransformer

        def run():
            GaussianOTTransformer().fit(source, target=target).transform(source)
    else:
        import ot

        def run():
            ot.da.LinearTransport().fit(Xs=source, Xt=target).transform(Xs=source)

    run()  # warm-up
    seconds = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {"median_s": float(np.median(seconds)), "min_s": min(seconds)}


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


def in_this_process(case: dict) -> dict:
    """Run ``case`` here: on a GPU, peak memory is reset per case and start-up is paid once."""
    return run_image_case(case)


def image_rows(args) -> list[dict]:
    run = in_this_process if args.device.startswith("cuda") else in_child
    rows = []
    for name in args.autoencoders:
        sizes = [s for s in args.sizes if name == "taef2" or s <= 1024]
        for size in sizes:
            base = {
                "autoencoder": name,
                "size": size,
                "device": args.device,
                "dtype": args.dtype,
                "shared": str(args.shared),
                "batch_size": args.batch_size,
                "n_images": args.fit_images,
            }
            floor = run({**base, "what": "floor", "repeats": args.repeats})
            transform = run({**base, "what": "transform", "repeats": args.repeats})
            fit = run({**base, "what": "fit"})
            row = {
                **base,
                **floor,
                "transform_s": transform["transform_s"],
                "transform_images_per_s": transform["transform_images_per_s"],
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
        f"transform {row['transform_images_per_s']:.3f} img/s  "
        f"peak {row['transform_peak_gb']:.2f} GB (floor {row['floor_peak_gb']:.2f} GB)",
        flush=True,
    )


def gaussian_rows(args) -> list[dict]:
    rows = []
    for dim in args.dims:
        case = {"gaussian": True, "dim": dim, "n": args.n, "repeats": 5}
        ours = in_child({**case, "library": "latent-ot"})
        pot = in_child({**case, "library": "pot"})
        row = {
            "dim": dim,
            "n": args.n,
            "latent_ot_s": ours["median_s"],
            "pot_s": pot["median_s"],
            "latent_ot_min_s": ours["min_s"],
            "pot_min_s": pot["min_s"],
            "speedup": pot["median_s"] / ours["median_s"],
        }
        rows.append(row)
        print(
            f"Gaussian stage d={dim:>4} n={args.n}: latent-ot {row['latent_ot_s']:.3f} s, "
            f"POT LinearTransport {row['pot_s']:.3f} s (medians of 5), speed-up "
            f"{row['speedup']:.2f}x (best runs: {row['pot_min_s'] / row['latent_ot_min_s']:.2f}x)",
            flush=True,
        )
    return rows


def write_seam_crop(path: Path, shared: str, device: str, dtype: str | None) -> dict:
    """TAEF2 round trip of a real photo at 1024 px, in 512 px tiles and in one pass.

    Writes, side by side, crops around the crossing of two tile seams: untiled, tiled, their
    absolute difference magnified 50 times, and, as a control that the crop would show a
    seam, the same for tiles that share no context (``overlap=0``, seams at 512 px).
    """
    import numpy as np
    import torch
    from PIL import Image

    from latent_ot.autoencoders import _tile_spans, load_autoencoder

    photo = Image.open(Path(shared) / "images" / "Set14" / "baboon.png").convert("RGB")
    photo = photo.resize((1024, 1024), Image.BICUBIC)  # fur: fine texture, where seams show
    image = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    vae = Path(shared) / "weights" / "taef2"
    outputs = {}
    for name, tiling in {
        "untiled": (None, None),
        "tiled": (512, None),
        "no overlap": (512, 0),
    }.items():
        autoencoder = load_autoencoder(
            vae, device=device, dtype=dtype, tile_size=tiling[0], tile_overlap=tiling[1]
        )
        outputs[name] = autoencoder.decode(autoencoder.encode(image.to(device)))[0].float().cpu()
    difference = (outputs["untiled"] - outputs["tiled"]).abs()
    control = (outputs["untiled"] - outputs["no overlap"]).abs()
    # Where the encoder's pixel tiles meet (the decoder's, in latent space, meet nearby).
    tiled = load_autoencoder(vae, tile_size=512)
    seam = _tile_spans(1024, 512, tiled.tile_overlap, tiled.factor)[0].keep_stop
    window = (slice(None), slice(seam - 64, 576), slice(seam - 64, 576))
    panels = [outputs["untiled"], outputs["tiled"], 50 * difference, 50 * control]
    strip = torch.cat([panel[window].clamp(0, 1) for panel in panels], dim=2)
    pixels = (strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    result = {
        "seam_px": seam,
        "mean_abs_difference": float(difference.mean()),
        "max_abs_difference": float(difference.max()),
        "no_overlap_mean_abs_difference": float(control.mean()),
    }
    print(
        f"seam crop: {path} (untiled | tiled | 50 x difference | 50 x difference without "
        f"overlap, around pixel {seam}); tiled vs untiled mean absolute difference "
        f"{result['mean_abs_difference']:.2e}, max {result['max_abs_difference']:.2e}; without "
        f"overlap {result['no_overlap_mean_abs_difference']:.2e}",
        flush=True,
    )
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--autoencoders", nargs="+", default=["taef2", "sd-config"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="autoencoder dtype, e.g. float16 on CUDA")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-images", type=int, default=3, help="images per set in fit")
    parser.add_argument("--batch-size", type=int, default=1, help="images encoded together")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument(
        "--seam-crop",
        type=Path,
        default=Path(__file__).with_name("seam_crop.png"),
        help="where to write the tiled / untiled crop (default: %(default)s)",
    )
    parser.add_argument("--dims", nargs="+", type=int, default=[36, 288, 800])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-gaussian", action="store_true")
    parser.add_argument("--skip-seams", action="store_true")
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
        "seams": None
        if args.skip_seams
        else write_seam_crop(args.seam_crop, args.shared, args.device, args.dtype),
        "gaussian": [] if args.skip_gaussian else gaussian_rows(args),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
