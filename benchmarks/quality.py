"""Quality benchmark: does the latent transport make classical restorations look natural,
and what does it cost in distortion? Runs offline on the shared images.

For each task (denoising sigma 50 by non-local means, bicubic x4 super-resolution, JPEG
quality 10 decoded), each variant of `latent_ot.LatentOTTransformer` (`VARIANTS`) and each
source of natural statistics (``--natural``: 10 clean CBSD68 images, or the package's
built-in prior with no natural images at all), it

1. fits the transport on 10 restored CBSD68 images (and 10 other, clean ones);
2. transports held-out test images (Set14, ``wikipedia-photos`` 036 to 049) for every
   alpha at once (`LatentOTTransformer.sweep`); the restorer's output is ``alpha = 1``;
3. measures PSNR and SSIM against the clean images, the Frechet distance and KID of
   MobileNet-v1 embeddings of 256 px crops (perceptual surrogates; real FID/KID too where
   torch-fidelity and its weights are present) and the no-reference BRISQUE score;
4. writes, under ``--output``: per run ``<task>/<variant>-<natural>/`` the table over
   alpha (``table.md``, ``table.csv``), the perception-distortion curve and collages of
   crops of every test image at each alpha; and ``summary.md``/``summary.csv`` with one row
   per (task, variant, natural): the KID drop at the best alpha within 1 dB of the
   restorer's PSNR and the PSNR loss at ``alpha = 0``.

Run from the repository root (``pip install -e .[bench]`` first)::

    python benchmarks/quality.py --quick        # a few minutes on 2 CPU cores
    python benchmarks/quality.py                # the full benchmark
    python benchmarks/quality.py --variant default paper --natural cbsd68

A new option of `LatentOTTransformer` is one line in `VARIANTS`.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _quality_measures import (
    EMBEDDING_MODEL,
    Brisque,
    MobileNetEmbedding,
    distribution_measures,
    inception_status,
    measure,
    summary_numbers,
)
from _quality_tasks import TASKS, TaskImages, center_crop, prepare

from latent_ot import LatentOTTransformer
from latent_ot.autoencoders import load_autoencoder
from latent_ot.cli import parse_alphas
from latent_ot.reporting import collage, plot_perception_distortion, write_csv, write_markdown

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "output" / "quality"

# What every variant starts from: TAEF2, the one pretrained autoencoder available offline.
BASE_PARAMS: dict[str, Any] = {"vae": "taef2"}
# Variant name -> LatentOTTransformer keyword arguments, on top of BASE_PARAMS (the command
# line sets device and random_state). A new option is one line here.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},  # patch_size="auto": 1 for TAEF2; rtol="auto": 0.05; low_frequency_sigma=6;
    # noise_scale=0
    "patch-3": {"patch_size": 3},  # the default before patch_size="auto"
    # The paper's recipe, with TAEF2 for its SD VAE (not available offline).
    "paper": LatentOTTransformer.paper(vae="taef2").get_params(),
    "residual": {"residual": True},
    "latent-interpolation": {"interpolation": "latent"},
    "shrinkage-oas": {"shrinkage": "oas"},
    "max-gain-2": {"max_gain": 2.0},
    "zero-shot": {"zero_shot": True},
    # Combinations with latent interpolation, the one option that moved the curve alone.
    "latent-gain-1.5": {"interpolation": "latent", "max_gain": 1.5},
    "latent-gain-2.5": {"interpolation": "latent", "max_gain": 2.5},
    "latent-patch-2": {"interpolation": "latent", "patch_size": 2},
    "latent-gaussian-fold": {"interpolation": "latent", "fold_window": "gaussian"},
    "latent-residual": {"interpolation": "latent", "residual": True},
    # Against the artifacts at alpha = 0: smaller patches, fewer amplified directions; and
    # zero-shot where the patch vectors are short enough to estimate from one image.
    "gain-1.5-patch-2": {"max_gain": 1.5, "patch_size": 2},
    "gain-1.5-gaussian-fold": {"max_gain": 1.5, "fold_window": "gaussian"},
    "patch-1": {"patch_size": 1},  # what "auto" gives TAEF2
    "zero-shot-patch-1": {"zero_shot": True, "patch_size": 1},
    # The stochastic map with the source's weak directions (eigenvalues under rtol times the
    # largest) cut: their target variance comes as fresh noise instead of amplified content.
    "stochastic-rtol-0.05": {"stochastic": "always", "rtol": 0.05},
    "stochastic-rtol-0.1": {"stochastic": "always", "rtol": 0.1},
    "patch-3-stochastic-rtol-0.01": {"patch_size": 3, "stochastic": "always", "rtol": 0.01},
    # The same cut with stochastic="auto": the stochastic map only where a direction is cut.
    "rtol-0.02": {"rtol": 0.02},
    "rtol-0.03": {"rtol": 0.03},
    "rtol-0.05": {"rtol": 0.05},
    # The input's band under a Gaussian low-pass of sigma pixels kept (default: 6).
    "low-pass-off": {"low_frequency_sigma": None},
    "low-pass-3": {"low_frequency_sigma": 3.0},
    "low-pass-8": {"low_frequency_sigma": 8.0},
    "patch-3-low-pass-8": {"patch_size": 3, "low_frequency_sigma": 8.0},
    # More weak directions drawn as noise, now that the low-pass leaves PSNR to spend.
    "rtol-0.1": {"rtol": 0.1},
    "rtol-0.2": {"rtol": 0.2},
    # Against the halos of super-resolution at alpha = 0: the map's largest gains limited.
    "max-gain-1.5": {"max_gain": 1.5},
    "max-gain-1.25": {"max_gain": 1.25},
    # The noise drawn in the directions rtol cuts: 1 is the stochastic map (the default
    # before), 0 (the default) its mean.
    "noise-1": {"noise_scale": 1.0},
    "noise-0.5": {"noise_scale": 0.5},
}
# Variants that only make sense with some sources of natural statistics.
VARIANT_NATURALS: dict[str, tuple[str, ...]] = {"paper": ("cbsd68",)}
NATURALS = ("cbsd68", "prior")
ALPHAS = (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_ALPHAS = (0.0, 0.5, 1.0)
COLLAGE_ROWS = 4  # test images per collage
# The columns of summary.md (summary.csv has them all).
SUMMARY_SHOWN = (
    "task", "variant", "natural", "restorer_psnr", "restorer_kid", "best_alpha", "best_kid",
    "kid_drop_pct", "kid_excess_drop_pct", "psnr_loss_at_0", "kid_at_0", "clean_kid_mobilenet",
    "brisque_restorer", "brisque_best", "brisque_at_0", "clean_brisque", "fit_s", "sweep_s",
    "measure_s",
)  # fmt: skip


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; errors name the option at fault."""
    parser = argparse.ArgumentParser(
        prog="quality.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results (created)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument(
        "--variant", nargs="+", choices=list(VARIANTS), default=["default"], dest="variants"
    )
    parser.add_argument(
        "--natural",
        choices=(*NATURALS, "both"),
        default="both",
        help="natural statistics from 10 clean CBSD68 images, from the built-in prior, or both",
    )
    parser.add_argument(
        "--quick", action="store_true", help="test crops of 256 px, alphas 0, 0.5, 1"
    )
    parser.add_argument(
        "--alphas",
        type=parse_alphas,
        help="START:STOP:STEP or comma-separated (write --alphas=-0.5,0,1); 0 and 1 always added",
    )
    parser.add_argument(
        "--size", type=int, help="max side of the test images' center crops (default 512)"
    )
    parser.add_argument("--n-fit", type=int, default=10, help="CBSD68 images per fit set")
    parser.add_argument("--crop-size", type=int, default=256, help="crops of FD and KID")
    parser.add_argument("--collage-crop", type=int, default=192, help="crops of the collages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default torch's; 1 on a busy machine)"
    )
    args = parser.parse_args(argv)
    args.alphas = sorted({*(args.alphas or (QUICK_ALPHAS if args.quick else ALPHAS)), 0.0, 1.0})
    args.size = args.size or (256 if args.quick else 512)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    for name in ("size", "crop_size", "collage_crop"):
        value = getattr(args, name)
        if value < 8:
            parser.error(f"--{name.replace('_', '-')} must be at least 8 px, got {value}")
    if not (args.shared / "images" / "CBSD68").is_dir():
        parser.error(f"--shared: {args.shared} holds no images/CBSD68; pass the shared folder")
    return args


# --------------------------------------------------------------------------- measures


def build_measures(shared: Path) -> tuple[MobileNetEmbedding | None, Brisque | None, bool]:
    """The feature network, the BRISQUE scorer and whether real FID/KID run; says what is
    left out and why."""
    extractor = brisque = None
    try:
        extractor = MobileNetEmbedding(shared / EMBEDDING_MODEL)
    except ImportError:
        print("FD/KID surrogates skipped: pip install ai-edge-litert (or .[bench])")
    except ValueError as error:  # the interpreter's word for a missing or broken file
        print(f"FD/KID surrogates skipped: {shared / EMBEDDING_MODEL}: {error}")
    try:
        brisque = Brisque()
    except ImportError as error:
        print(f"BRISQUE skipped ({error}): pip install brisque opencv-python-headless (.[bench])")
    reason = inception_status()
    if reason is not None:
        print(f"real FID/KID skipped: {reason}")
    return extractor, brisque, reason is None


# --------------------------------------------------------------------------- runs


class PriorUnavailable(RuntimeError):
    """``fit(restored)`` without natural images is refused: no built-in prior here."""


def make_operator(variant: str, args: argparse.Namespace) -> LatentOTTransformer:
    """The unfitted operator of ``variant``; a clear error for options this version lacks."""
    params = {**BASE_PARAMS, **VARIANTS[variant], "device": args.device}
    params["random_state"] = args.seed
    try:
        return LatentOTTransformer(**params)
    except TypeError as error:
        raise TypeError(
            f"variant {variant!r} ({VARIANTS[variant]}) needs an option this version of "
            f"LatentOTTransformer lacks: {error}"
        ) from error


def fit_operator(
    operator: LatentOTTransformer, images: TaskImages, natural: str
) -> LatentOTTransformer:
    """Fit on the restored set and the clean CBSD68 set, or on the restored set alone."""
    if natural == "cbsd68":
        return operator.fit(images.fit_restored, images.fit_natural)
    try:
        return operator.fit(images.fit_restored)
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise PriorUnavailable(
            "LatentOTTransformer.fit(restored) without natural images raised "
            f"{type(error).__name__}: {error}; this version has no built-in natural prior"
        ) from error


def run_one(
    operator: LatentOTTransformer,
    images: TaskImages,
    natural: str,
    folder: Path,
    args: argparse.Namespace,
    measures: tuple[MobileNetEmbedding | None, Brisque | None, bool],
    clean_kid: float,
) -> dict[str, Any]:
    """Fit, sweep, measure and write one (task, variant, natural); returns its summary."""
    extractor, brisque, inception = measures
    times = {}
    start = time.perf_counter()
    operator = fit_operator(operator, images, natural)
    times["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    outputs = operator.sweep(images.restored, args.alphas)
    times["sweep_s"] = time.perf_counter() - start
    start = time.perf_counter()
    rows = [
        {
            "alpha": alpha,
            **measure(
                images_at_alpha,
                images.clean,
                extractor=extractor,
                brisque=brisque,
                crop_size=args.crop_size,
                inception=inception,
                seed=args.seed,
            ),
        }
        for alpha, images_at_alpha in zip(args.alphas, outputs, strict=True)
    ]
    times["measure_s"] = time.perf_counter() - start
    start = time.perf_counter()
    write_run(rows, outputs, images, folder, args)
    times["write_s"] = time.perf_counter() - start
    numbers = {}
    if extractor is not None:
        numbers = summary_numbers(rows, clean_kid=clean_kid)
    brisque_at = {row["alpha"]: row.get("brisque", math.nan) for row in rows}
    return {
        **numbers,
        "brisque_restorer": brisque_at[1.0],
        "brisque_best": brisque_at.get(numbers.get("best_alpha"), math.nan),
        "brisque_at_0": brisque_at[0.0],
        "w2": float(getattr(operator, "w2_", math.nan)),
        **times,
    }


def write_run(
    rows: list[dict[str, float]],
    outputs: list[list[np.ndarray]],
    images: TaskImages,
    folder: Path,
    args: argparse.Namespace,
) -> None:
    """The table, the perception-distortion curve and the collages of one run."""
    print(write_markdown(rows, folder / "table.md"))
    write_csv(rows, folder / "table.csv")
    if "kid_mobilenet" in rows[0]:
        # The curve's perception axis is the table's KID; here the MobileNet surrogate.
        curve = plot_perception_distortion(
            [{"alpha": r["alpha"], "psnr": r["psnr"], "kid": r["kid_mobilenet"]} for r in rows]
        )
        if curve is not None:
            curve.save(folder / "perception_distortion_kid_mobilenet.png")
    for page, start in enumerate(range(0, len(images.names), COLLAGE_ROWS), start=1):
        picked = range(start, min(start + COLLAGE_ROWS, len(images.names)))
        write_collage(outputs, images, picked, args, folder / f"collage_{page:02d}.png")


def write_collage(
    outputs: list[list[np.ndarray]],
    images: TaskImages,
    picked: range,
    args: argparse.Namespace,
    path: Path,
) -> None:
    """Center crops of the ``picked`` test images: clean, then every alpha from 1 down."""
    order = sorted(range(len(args.alphas)), key=lambda k: -args.alphas[k])
    titles = ["clean"] + [
        f"alpha={args.alphas[k]:g}" + (" (restorer)" if args.alphas[k] == 1.0 else "")
        for k in order
    ]
    rows = {}
    for i in picked:
        label = images.names[i].replace("wikipedia-photos/", "wiki ").replace("Set14/", "")
        row = [images.clean[i]] + [outputs[k][i] for k in order]
        rows[label] = [center_crop(image, args.collage_crop) for image in row]
    collage(rows, titles).save(path, optimize=True)


def clean_baseline(
    images: TaskImages,
    args: argparse.Namespace,
    measures: tuple[MobileNetEmbedding | None, Brisque | None, bool],
) -> dict[str, float]:
    """The floor of the perceptual measures: clean test images against clean test images
    (the halves of `distribution_measures`), and their mean BRISQUE."""
    extractor, brisque, inception = measures
    floor = distribution_measures(
        images.clean,
        images.clean,
        extractor=extractor,
        inception=inception,
        crop_size=args.crop_size,
        seed=args.seed,
    )
    if brisque is not None:
        floor["brisque"] = float(np.mean([brisque(image) for image in images.clean]))
    return {f"clean_{name}": value for name, value in floor.items()}


def runs_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (variant, natural) pairs to run, in order."""
    naturals = NATURALS if args.natural == "both" else (args.natural,)
    return [
        (variant, natural)
        for variant in args.variants
        for natural in naturals
        if natural in VARIANT_NATURALS.get(variant, NATURALS)
    ]


# --------------------------------------------------------------------------- main


def use_shared_taef2_if_not_bundled(shared: Path) -> None:
    """Point ``LATENT_OT_MODELS_DIR`` at the shared TAEF2 weights if the package cannot load
    its own: only then, as the built-in prior belongs to the bundled autoencoder."""
    try:
        load_autoencoder("taef2")
    except (OSError, ValueError) as error:
        if not (shared / "weights" / "taef2").is_dir() or "LATENT_OT_MODELS_DIR" in os.environ:
            raise
        print(f"TAEF2 from {shared / 'weights'}: the package's own did not load ({error})")
        os.environ["LATENT_OT_MODELS_DIR"] = str(shared / "weights")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the summary rows."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    use_shared_taef2_if_not_bundled(args.shared)
    args.output.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    (args.output / "command.txt").write_text(command + "\n", encoding="utf-8")
    measures = build_measures(args.shared)
    summary: list[dict[str, Any]] = []
    baseline: dict[str, float] = {}
    prior_missing = False
    for task_name in args.tasks:
        start = time.perf_counter()
        images = prepare(
            TASKS[task_name],
            args.shared,
            n_fit=args.n_fit,
            size=args.size,
            seed=args.seed,
        )
        prepare_s = time.perf_counter() - start
        print(f"\n== {task_name}: {len(images.names)} test images prepared in {prepare_s:.1f} s")
        # The same clean test images in every task: their floor is measured once.
        baseline = baseline or clean_baseline(images, args, measures)
        for variant, natural in runs_of(args):
            if natural == "prior" and prior_missing:
                continue
            print(f"\n-- {task_name}, variant {variant}, natural {natural}")
            folder = args.output / task_name / f"{variant}-{natural}"
            try:
                numbers = run_one(
                    make_operator(variant, args),
                    images,
                    natural,
                    folder,
                    args,
                    measures,
                    baseline.get("clean_kid_mobilenet", math.nan),
                )
            except PriorUnavailable as error:
                print(f"natural=prior skipped for the whole run: {error}")
                prior_missing = True
                continue
            row = {"task": task_name, "variant": variant, "natural": natural, **numbers}
            summary.append({**row, **baseline, "prepare_s": prepare_s})
            print(", ".join(f"{key} {value:.4g}" for key, value in numbers.items()))
    if summary:
        shown = [{key: row[key] for key in SUMMARY_SHOWN if key in row} for row in summary]
        print("\n" + write_markdown(shown, args.output / "summary.md"))
        write_csv(summary, args.output / "summary.csv")
    print(f"\nwritten to {args.output}")
    return summary


if __name__ == "__main__":
    main()
