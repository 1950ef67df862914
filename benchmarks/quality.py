"""Quality benchmark: does the latent transport make classical restorations look natural,
and what does it cost in distortion? Runs offline on the shared images.

For each task (learned x4 and x2 super-resolution by two UpscalerJS networks, denoising
sigma 50 by non-local means, bicubic x4 super-resolution, JPEG quality 10 decoded), each
variant of `latent_ot.LatentOTTransformer` (`VARIANTS`) and each source of natural statistics
(``--natural``: 10 clean CBSD68 images, or the package's built-in prior with no natural
images at all), it

1. fits the transport on 10 restored CBSD68 images (and 10 other, clean ones);
2. transports the held-out images of ``--split`` (``validation``: Set14 and
   ``wikipedia-photos`` 036 to 042, where options and defaults are chosen; ``test``:
   ``wikipedia-photos`` 043 to 049, Set5 and the CBSD68 images no fit uses, for the report
   and nothing else) for every alpha at once (`LatentOTTransformer.sweep`); the restorer's
   output is ``alpha = 1``. The ``shifts-N`` variants are cycle spinning,
   ``LatentOTTransformer(shifts=N)``: the image transported at N sub-latent shifts, averaged;
3. measures PSNR and SSIM against the clean images, the latent-grid score
   (`latent_ot.metrics.latent_grid_score`), the Frechet distance and KID of 256 px crops in
   two feature networks, MobileNet-v1 embeddings and pooled deep features of an RDN x2
   that nothing here was tuned on (perceptual surrogates, the RDN on the central
   ``--rdn-crop`` px of each crop; real FID/KID too where torch-fidelity and its weights are
   present) and the no-reference BRISQUE score;
4. writes, under ``--output/<split>``: per run ``<task>/<variant>-<natural>/`` the table
   over alpha (``table.md``, ``table.csv``), the perception-distortion curve, collages of
   crops of every test image at each alpha and, at 2x zoom (nearest neighbour), of each
   image's finest structure at alpha 0, the default alpha and 1 (``fine_*.png``); and
   ``summary.md``/``summary.csv`` with one row per (task, variant, natural): the KID drop
   at the best alpha within 1 dB of the restorer's PSNR, the PSNR loss at ``alpha = 0``,
   the grid score and the second network's KID change.

Restored images are cached under ``--cache`` (the learned networks take minutes).

Run from the repository root (``pip install -e .[bench]`` first)::

    python benchmarks/quality.py --quick        # under 5 minutes on 2 CPU cores
    python benchmarks/quality.py --split test   # the full benchmark, on the test split
    python benchmarks/quality.py --variant default paper --natural cbsd68

A new option of `LatentOTTransformer` is one line in `VARIANTS`.
"""

from __future__ import annotations

import argparse
import copy
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
from _quality_figures import write_collages
from _quality_measures import (
    EMBEDDING_MODEL,
    RDN_MODEL,
    Brisque,
    MobileNetEmbedding,
    RDNFeatures,
    distribution_measures,
    inception_status,
    judge_numbers,
    measure,
    summary_numbers,
)
from _quality_tasks import SPLITS, TASKS, TaskImages, prepare

from latent_ot import GaussianOTTransformer, LatentOTTransformer
from latent_ot.apps.reports import plot_perception_distortion, write_csv, write_markdown
from latent_ot.autoencoders import load_autoencoder
from latent_ot.cli import parse_alphas
from latent_ot.metrics import latent_grid_score

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "output" / "quality"
DEFAULT_CACHE = ROOT / "benchmarks" / "output" / "cache"

# What every variant starts from: TAEF2, the one pretrained autoencoder available offline.
BASE_PARAMS: dict[str, Any] = {"vae": "taef2"}
# Variant name -> LatentOTTransformer keyword arguments, on top of BASE_PARAMS (the command
# line sets device and random_state). A new option is one line here. (The variants of options
# since removed, shrinkage, max_gain, zero_shot, residual and fold_window, are gone; their
# measurements stay in benchmarks/README.md.)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},  # patch_size="auto": 1 for TAEF2, whose map is rtol 0.05 and noise_scale 0;
    # interpolation="latent"; low_frequency_sigma=6
    "patch-2": {"patch_size": 2},
    "patch-3": {"patch_size": 3},  # the default before patch_size="auto"
    # The paper's recipe, with TAEF2 for its SD VAE (not available offline).
    "paper": LatentOTTransformer.paper(vae="taef2").get_params(deep=False),
    "pixel-interpolation": {"interpolation": "pixel"},
    # The stochastic map with the source's weak directions (eigenvalues under rtol times the
    # largest) cut: their target variance comes as fresh noise instead of amplified content.
    "stochastic-rtol-0.05": {"transport": GaussianOTTransformer(stochastic="always", rtol=0.05)},
    "stochastic-rtol-0.1": {"transport": GaussianOTTransformer(stochastic="always", rtol=0.1)},
    # The same cut with stochastic="auto", the noise drawn at noise_scale times its variance
    # (0, the default for TAEF2: the mean; 1: the stochastic map).
    "rtol-0.02": {"transport": GaussianOTTransformer(rtol=0.02, noise_scale=0.0)},
    "rtol-0.1": {"transport": GaussianOTTransformer(rtol=0.1, noise_scale=0.0)},
    "rtol-0.2": {"transport": GaussianOTTransformer(rtol=0.2, noise_scale=0.0)},
    "noise-1": {"transport": GaussianOTTransformer(rtol=0.05, noise_scale=1.0)},
    "noise-0.5": {"transport": GaussianOTTransformer(rtol=0.05, noise_scale=0.5)},
    # The input's band under a Gaussian low-pass of sigma pixels kept (default: 6).
    "low-pass-off": {"low_frequency_sigma": None},
    "low-pass-3": {"low_frequency_sigma": 3.0},
    "low-pass-8": {"low_frequency_sigma": 8.0},
    "patch-3-low-pass-8": {"patch_size": 3, "low_frequency_sigma": 8.0},
    # Cycle spinning: the image transported at 1, 2, 4 or 16 shifts of a fraction of the 8 px
    # latent grid (reflect-padded), shifted back and averaged; N shifts cost N transforms.
    **{f"shifts-{n}": {"shifts": n} for n in (1, 2, 4, 16)},
}
# Variants that only make sense with some sources of natural statistics.
VARIANT_NATURALS: dict[str, tuple[str, ...]] = {"paper": ("cbsd68",)}
NATURALS = ("cbsd68", "prior")
ALPHAS = (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_ALPHAS = (0.0, 0.5, 1.0)
# --quick: the defaults a user gets (the built-in prior), 256 px crops, the two x4
# super-resolution tasks (learned and bicubic); the learned x2 network is the slowest restorer.
QUICK_TASKS = ("learned_sr_x4", "super_resolution")
# The RDN judge's side in --quick: its features cost about 16x those of MobileNet per 256 px
# crop and dominated the quick run; the central 128 px of each crop cost a quarter.
QUICK_RDN_CROP = 128
# The columns of summary.md (summary.csv has them all).
SUMMARY_SHOWN = (
    "task", "variant", "natural", "restorer_psnr", "restorer_kid", "best_alpha", "best_kid",
    "kid_drop_pct", "psnr_loss_at_0", "kid_at_0", "rdn_kid_change_best_pct",
    "rdn_kid_change_at_0_pct", "grid_restorer", "grid_best", "grid_at_0", "grid_at_default",
    "brisque_restorer", "brisque_best", "brisque_at_0", "clean_brisque", "fit_s", "sweep_s",
    "sweep_s_per_image", "measure_s",
)  # fmt: skip


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; errors name the option at fault."""
    parser = argparse.ArgumentParser(
        prog="quality.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results (created)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: all")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="validation",
        help="validation (choosing options and defaults) or test (the report, nothing else)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="restored images")
    parser.add_argument(
        "--variant", nargs="+", choices=list(VARIANTS), default=["default"], dest="variants"
    )
    parser.add_argument(
        "--natural",
        choices=(*NATURALS, "both"),
        help="natural statistics from 10 clean CBSD68 images, from the built-in prior, or "
        "both (default: both; prior with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"crops of 256 px, alphas 0, 0.5, 1 and the default, the prior, the RDN judge on "
        f"{QUICK_RDN_CROP} px, tasks {' '.join(QUICK_TASKS)}",
    )
    parser.add_argument(
        "--alphas",
        type=parse_alphas,
        help="START:STOP:STEP or comma-separated (write --alphas=-0.5,0,1); 0, the default "
        "alpha and 1 always added",
    )
    parser.add_argument(
        "--size", type=int, help="max side of the test images' center crops (default 512)"
    )
    parser.add_argument("--n-fit", type=int, default=10, help="CBSD68 images per fit set")
    parser.add_argument("--crop-size", type=int, default=256, help="crops of FD and KID")
    parser.add_argument("--collage-crop", type=int, default=192, help="crops of the collages")
    parser.add_argument(
        "--rdn-crop",
        type=int,
        help="px of the center of each crop the RDN judge sees (default: --crop-size; "
        f"{QUICK_RDN_CROP} with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default torch's; 1 on a busy machine)"
    )
    args = parser.parse_args(argv)
    args.default_alpha = float(LatentOTTransformer().alpha)
    # 0 (the transport alone), the default and 1 (the restorer) are always measured.
    wanted = args.alphas or (QUICK_ALPHAS if args.quick else ALPHAS)
    args.alphas = sorted({*wanted, 0.0, args.default_alpha, 1.0})
    args.size = args.size or (256 if args.quick else 512)
    args.tasks = args.tasks or list(QUICK_TASKS if args.quick else TASKS)
    args.natural = args.natural or ("prior" if args.quick else "both")
    args.rdn_crop = args.rdn_crop or (QUICK_RDN_CROP if args.quick else args.crop_size)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    for name in ("size", "crop_size", "collage_crop", "rdn_crop"):
        value = getattr(args, name)
        if value < 8:
            parser.error(f"--{name.replace('_', '-')} must be at least 8 px, got {value}")
    if not (args.shared / "images" / "CBSD68").is_dir():
        parser.error(f"--shared: {args.shared} holds no images/CBSD68; pass the shared folder")
    return args


# --------------------------------------------------------------------------- measures


Measures = tuple[dict[str, Any], "Brisque | None", bool]


def build_measures(shared: Path, rdn_crop: int | None = None) -> Measures:
    """The feature networks (name -> network; the RDN sees the central ``rdn_crop`` px), the
    BRISQUE scorer and whether real FID/KID run; says what is left out and why."""
    extractors: dict[str, Any] = {}
    brisque = None
    try:
        extractors["mobilenet"] = MobileNetEmbedding(shared / EMBEDDING_MODEL)
    except ImportError:
        print("MobileNet FD/KID skipped: pip install ai-edge-litert (or .[bench])")
    except ValueError as error:  # the interpreter's word for a missing or broken file
        print(f"MobileNet FD/KID skipped: {shared / EMBEDDING_MODEL}: {error}")
    if (shared / RDN_MODEL).is_file():
        extractors["rdn"] = RDNFeatures(shared / RDN_MODEL, crop=rdn_crop)
    else:
        print(f"RDN FD/KID skipped: no {shared / RDN_MODEL}")
    try:
        brisque = Brisque()
    except ImportError as error:
        print(f"BRISQUE skipped ({error}): pip install brisque opencv-python-headless (.[bench])")
    reason = inception_status()
    if reason is not None:
        print(f"real FID/KID skipped: {reason}")
    return extractors, brisque, reason is None


# --------------------------------------------------------------------------- runs


class PriorUnavailable(RuntimeError):
    """``fit(restored)`` without natural images is refused: no built-in prior here."""


def make_operator(variant: str, args: argparse.Namespace) -> LatentOTTransformer:
    """The unfitted operator of ``variant``; a clear error for options this version lacks."""
    params = {**BASE_PARAMS, **copy.deepcopy(VARIANTS[variant]), "device": args.device}
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
    measures: Measures,
    clean_kid: float,
) -> dict[str, Any]:
    """Fit, sweep, measure and write one (task, variant, natural); returns its summary."""
    extractors, brisque, inception = measures
    times = {}
    start = time.perf_counter()
    operator = fit_operator(operator, images, natural)
    times["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    outputs = operator.sweep(images.restored, args.alphas)
    times["sweep_s"] = time.perf_counter() - start
    times["sweep_s_per_image"] = times["sweep_s"] / len(images.restored)
    start = time.perf_counter()
    rows = [
        {
            "alpha": alpha,
            **measure(
                images_at_alpha,
                images.clean,
                extractors=extractors,
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
    if "mobilenet" in extractors:
        numbers = summary_numbers(rows, clean_kid=clean_kid)
    numbers.update(judge_numbers(rows, numbers.get("best_alpha", 1.0), args.default_alpha))
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
    write_collages(outputs, images, args.alphas, args.default_alpha, folder, args.collage_crop)


def clean_baseline(
    images: TaskImages,
    args: argparse.Namespace,
    measures: Measures,
) -> dict[str, float]:
    """The floor of the perceptual measures: clean test images against clean test images
    (the halves of `distribution_measures`), their mean BRISQUE and grid score."""
    extractors, brisque, inception = measures
    floor = distribution_measures(
        images.clean,
        images.clean,
        extractors=extractors,
        inception=inception,
        crop_size=args.crop_size,
        seed=args.seed,
    )
    if brisque is not None:
        floor["brisque"] = float(np.mean([brisque(image) for image in images.clean]))
    floor["grid"] = float(np.mean([latent_grid_score(image) for image in images.clean]))
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
    args.output = args.output / args.split
    args.output.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    (args.output / "command.txt").write_text(command + "\n", encoding="utf-8")
    measures = build_measures(args.shared, args.rdn_crop)
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
            split=args.split,
            cache=args.cache,
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
            row["split"] = args.split
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
