"""Speed and memory of latent-ot next to its floor, the autoencoder itself.

Prints, per autoencoder and image size: encode and decode seconds, ``transform`` seconds and
its overhead ratio ``transform / (encode + decode)``, fit throughput against pure encode
throughput (same batch size), ``transform`` throughput, and peak memory (CPU: max RSS of a
fresh child process; GPU: ``torch.cuda.max_memory_allocated``, reset per case), also of
``transform`` alone above the loaded model, tiled against untiled. Then writes
a crop of a 1024 px photo decoded in tiles and in one pass, to look at the seams. Then the
Gaussian stage, ``GaussianOTTransformer`` fit + transform, against POT's
``ot.da.LinearTransport`` on the same data: each library in its own child process, median of
five runs after a warm-up.

The numbers of each ratio are timed in turns in one process (encode, decode, transform; fit,
encode), best of ``--repeats`` rounds after a warm-up round. On the CPU every image
measurement runs in its own child process, so peak memory is that case's alone; on a GPU
they run in this process (peak memory is reset per case).

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
    """Best of ``repeats`` wall-clock seconds, after a warm-up call."""
    return interleaved({"function": function}, repeats)["function"]


def interleaved(functions: dict, repeats: int) -> dict:
    """Best wall-clock seconds of each function, run in turn ``repeats`` times after a warm-up.

    Taking turns puts the numbers of a ratio in the same process at the same moment: on a
    shared machine, run-to-run noise (10 to 20 % on a 2-core VM) would swamp a 1 %
    difference. The warm-up round pays each shape's one-off setup (kernel choice, allocator
    growth).
    """
    for function in functions.values():
        function()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            synchronize()
            start = time.perf_counter()
            function()
            synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def synchronize() -> None:
    """Wait for the GPU, if any, so that wall-clock times include its work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_image_case(case: dict) -> dict:
    """One autoencoder, one size, one kind of measurement; runs in a child process."""
    import torch

    from latent_ot import LatentOTTransformer
    from latent_ot.devices import keep_freed_cpu_memory
    from latent_ot.memory import reusing_freed_memory

    if case["keep_freed_memory"]:
        keep_freed_cpu_memory()
    torch.manual_seed(0)
    size, device = case["size"], case["device"]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    autoencoder = build_autoencoder(case["autoencoder"], device, case["dtype"], case["shared"])
    image = torch.rand(1, 3, size, size, device=device)
    result = {}
    # The floor gets what fit and transform get: on the CPU, memory that one autoencoder pass
    # frees is reused by the next (encode, then decode; batch after batch).
    if case["what"] == "floor":
        with reusing_freed_memory(autoencoder):
            autoencoder.decode(autoencoder.encode(image))  # for the peak memory of the floor
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
        splits = []

        def encode_then_decode():
            start = time.perf_counter()
            with reusing_freed_memory(autoencoder):
                latents = autoencoder.encode(image)
                synchronize()
                middle = time.perf_counter()
                autoencoder.decode(latents)
                synchronize()
            splits.append((middle - start, time.perf_counter() - middle))

        # One function for the floor, as transform is one: the sum of the best encode and
        # the best decode of different rounds would be lower than any real encode + decode.
        functions = {"floor": encode_then_decode, "transform": lambda: operator.transform(pixels)}
        best = interleaved(functions, case["repeats"])
        result["encode_s"], result["decode_s"] = min(splits[1:], key=sum)  # [0]: warm-up
        result["transform_s"] = best["transform"]
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
        functions = {
            "fit": lambda: operator.fit(images, images),
            "encode": lambda: encode_all(autoencoder, batches * 2, device),
        }
        seconds = interleaved(functions, case["repeats"])
        result["fit_images_per_s"] = 2 * len(images) / seconds["fit"]
        result["encode_images_per_s"] = 2 * len(images) / seconds["encode"]
    elif case["what"] == "memory":
        # transform alone, tiled or in one pass. The statistics do not depend on the image
        # size, so the fit runs on small images; then the peak is reset to what is held now.
        operator = LatentOTTransformer(
            vae=autoencoder, device=device, dtype=autoencoder.dtype, tile_size=case["tile_size"]
        )
        small = [torch.rand(3, 256, 256) for _ in range(2)]
        operator.fit(small, [pixels**2 for pixels in small])
        pixels = image[0].cpu()
        held = reset_peak_memory(device)
        operator.transform(pixels)
        result["above_model_gb"] = peak_memory_gb(device) - held
    result["peak_memory_gb"] = peak_memory_gb(device)
    return result


def encode_all(autoencoder, batches: list, device: str) -> None:
    """A plain encode of every batch, in one block of memory reuse as ``fit`` has."""
    from latent_ot.memory import reusing_freed_memory

    with reusing_freed_memory(autoencoder):
        for batch in batches:
            autoencoder.encode(batch.to(device))


def peak_memory_gb(device: str) -> float:
    """Peak since the start of the case or the last :func:`reset_peak_memory`, in GB."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9  # reset at the start of each case
    if Path("/proc/self/status").exists():
        return _process_status_kb("VmHWM") / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def reset_peak_memory(device: str) -> float:
    """Reset the peak to the memory held now, and return that, in GB."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e9
    # Writing 5 to clear_refs resets the process's peak resident set size (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    return _process_status_kb("VmRSS") / 1e6


def _process_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_gaussian_case(case: dict) -> dict:
    """One library's Gaussian stage, fit + transform, on the same seeded data; median seconds."""
    import numpy as np

    from latent_ot.devices import keep_freed_cpu_memory

    if case.get("keep_freed_memory"):
        keep_freed_cpu_memory()
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
                "keep_freed_memory": args.keep_freed_memory,
            }
            floor = run({**base, "what": "floor"})
            transform = run({**base, "what": "transform", "repeats": args.repeats})
            fit = run({**base, "what": "fit", "repeats": args.repeats})
            memory = {}
            if not args.skip_untiled:
                for tiling, tile_size in (("tiled", "auto"), ("untiled", None)):
                    case = {**base, "what": "memory", "tile_size": tile_size}
                    memory[f"{tiling}_above_model_gb"] = run(case)["above_model_gb"]
            row = {
                **base,
                "encode_s": transform["encode_s"],
                "decode_s": transform["decode_s"],
                "transform_s": transform["transform_s"],
                "transform_images_per_s": transform["transform_images_per_s"],
                "overhead": transform["transform_s"]
                / (transform["encode_s"] + transform["decode_s"]),
                "floor_peak_gb": floor["peak_memory_gb"],
                "transform_peak_gb": transform["peak_memory_gb"],
                "fit_images_per_s": fit["fit_images_per_s"],
                "encode_images_per_s": fit["encode_images_per_s"],
                "fit_vs_encode": fit["fit_images_per_s"] / fit["encode_images_per_s"],
                **memory,
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
    if "untiled_above_model_gb" in row:
        tiled, untiled = row["tiled_above_model_gb"], row["untiled_above_model_gb"]
        print(
            f"{'':>6} {row['size']:>5} px  transform memory above the model: tiled "
            f"{tiled:.2f} GB, untiled {untiled:.2f} GB ({tiled / untiled:.2f}x)",
            flush=True,
        )


def gaussian_rows(args) -> list[dict]:
    rows = []
    for dim in args.dims:
        case = {
            "gaussian": True,
            "dim": dim,
            "n": args.n,
            "repeats": 5,
            "keep_freed_memory": args.keep_freed_memory,
        }
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

    from latent_ot.autoencoders import load_autoencoder
    from latent_ot.autoencoders._tiling import _tile_spans

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
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed rounds after the warm-up (best is kept)"
    )
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
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run every case with freed memory kept for reuse for the whole process "
        "(latent_ot.devices.keep_freed_cpu_memory)",
    )
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-gaussian", action="store_true")
    parser.add_argument("--skip-seams", action="store_true")
    parser.add_argument(
        "--skip-untiled",
        action="store_true",
        help="skip the memory of transform tiled against untiled (one more pass per row)",
    )
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
