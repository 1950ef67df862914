"""Speed and memory of latent-ot next to its floor, the autoencoder itself.

Prints, per autoencoder and image size: the plain encode + decode a user would write by hand
(eval modules, contiguous float32, ``torch.inference_mode()``, no memory policy), encode and
decode seconds through latent-ot's adapter, ``transform`` seconds (with latent-ot's memory
policy, and with it turned off by ``LATENT_OT_REUSE_FREED_MEMORY=0``) and their ratios to the
plain pass and to the adapter's, fit throughput against pure encode throughput (same batch
size), ``transform`` throughput, and peak memory (CPU: max RSS of a fresh child process; GPU:
``torch.cuda.max_memory_allocated``, reset per case), also of ``transform`` alone above the
loaded model, tiled against untiled. Then the folder throughput: ``transform_files`` (what
``latent-ot transform`` runs) over 100 photos of mixed sizes from ``shared/images`` on disk
to PNG files on disk, with reads and writes overlapped and in turn, against the autoencoder
alone on the same images already in memory. Then writes a crop of a 1024 px photo decoded in
tiles and in one pass, to look at the seams. Then the Gaussian stage,
``GaussianOTTransformer`` fit + transform, against POT's ``ot.da.LinearTransport`` on the
same data: each library in its own child process, median of five runs after a warm-up.

The numbers of each ratio are timed in turns in one process (plain pass, encode + decode,
transform, transform without the memory policy; fit, encode; the folder's three passes),
best of ``--repeats`` rounds after a warm-up round. On the CPU every image measurement runs
in its own child process, so peak memory is that case's alone; on a GPU they run in this
process (peak memory is reset per case).

Run: ``python benchmarks/bench.py`` (all cases, tens of minutes on 2 CPU cores), or pick
cases with ``--autoencoders taef2 --sizes 512 1024 --skip-gaussian``; on a GPU
``--device cuda --dtype float16 --batch-size 4 --fit-images 8 --repeats 3``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from _speed_cases import run_image_case

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_gaussian_case(case: dict) -> dict:
    """One library's Gaussian stage, fit + transform, on the same seeded data; median seconds."""
    import numpy as np

    from latent_ot.memory import keep_freed_cpu_memory

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
                    measured = run({**base, "what": "memory", "tile_size": tile_size})
                    memory[f"{tiling}_above_model_gb"] = measured["above_model_gb"]
                    # The whole process, loaded model included, for one transform alone.
                    memory[f"{tiling}_peak_gb"] = measured["peak_memory_gb"]
            floor_s = transform["encode_s"] + transform["decode_s"]
            row = {
                **base,
                "plain_s": transform["plain_s"],
                "encode_s": transform["encode_s"],
                "decode_s": transform["decode_s"],
                "transform_s": transform["transform_s"],
                "transform_no_reuse_s": transform["transform_no_reuse_s"],
                "transform_images_per_s": transform["transform_images_per_s"],
                "vs_plain": transform["transform_s"] / transform["plain_s"],
                "no_reuse_vs_plain": transform["transform_no_reuse_s"] / transform["plain_s"],
                "overhead": transform["transform_s"] / floor_s,
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
        f"{row['autoencoder']:>6} {row['size']:>5} px  plain {row['plain_s']:7.2f} s  "
        f"encode {row['encode_s']:7.2f} s  decode {row['decode_s']:7.2f} s  "
        f"transform {row['transform_s']:7.2f} s ({row['vs_plain']:.3f}x plain, overhead "
        f"{row['overhead']:.3f}x)  memory policy off {row['transform_no_reuse_s']:7.2f} s "
        f"({row['no_reuse_vs_plain']:.3f}x plain)  fit {row['fit_images_per_s']:.3f} img/s "
        f"vs encode {row['encode_images_per_s']:.3f} img/s ({row['fit_vs_encode']:.2f}x)  "
        f"transform {row['transform_images_per_s']:.3f} img/s  "
        f"peak {row['transform_peak_gb']:.2f} GB (floor {row['floor_peak_gb']:.2f} GB)",
        flush=True,
    )
    if "untiled_above_model_gb" in row:
        tiled, untiled = row["tiled_above_model_gb"], row["untiled_above_model_gb"]
        print(
            f"{'':>6} {row['size']:>5} px  transform memory above the model: tiled "
            f"{tiled:.2f} GB, untiled {untiled:.2f} GB ({tiled / untiled:.2f}x); process peak "
            f"{row['tiled_peak_gb']:.2f} GB (untiled {row['untiled_peak_gb']:.2f} GB)",
            flush=True,
        )


def folder_rows(args) -> list[dict]:
    """Folder throughput per autoencoder: transform_files on disk against the autoencoder alone."""
    run = in_this_process if args.device.startswith("cuda") else in_child
    rows = []
    for name in args.folder_autoencoders:
        case = {
            "what": "folder",
            "autoencoder": name,
            "device": args.device,
            "dtype": args.dtype,
            "shared": str(args.shared),
            "n_images": args.folder_images,
            "keep_freed_memory": args.keep_freed_memory,
        }
        row = {**case, **run(case)}
        row["overlapped_vs_alone"] = row["overlapped_images_per_s"] / row["alone_images_per_s"]
        row["in_turn_vs_alone"] = row["in_turn_images_per_s"] / row["alone_images_per_s"]
        rows.append(row)
        print(
            f"folder {name}: {args.folder_images} photos ({row['megapixels']:.1f} Mpx), "
            f"autoencoder alone in memory {row['alone_images_per_s']:.3f} img/s; "
            f"transform_files overlapped {row['overlapped_images_per_s']:.3f} img/s "
            f"({row['overlapped_vs_alone']:.3f}x), in turn {row['in_turn_images_per_s']:.3f} "
            f"img/s ({row['in_turn_vs_alone']:.3f}x)",
            flush=True,
        )
    return rows


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
        "(latent_ot.memory.keep_freed_cpu_memory)",
    )
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-folder", action="store_true")
    parser.add_argument(
        "--folder-images", type=int, default=100, help="photos in the folder case (at most 136)"
    )
    parser.add_argument("--folder-autoencoders", nargs="+", default=["taef2"])
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
        "folder": [] if args.skip_folder else folder_rows(args),
        "seams": None
        if args.skip_seams
        else write_seam_crop(args.seam_crop, args.shared, args.device, args.dtype),
        "gaussian": [] if args.skip_gaussian else gaussian_rows(args),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
