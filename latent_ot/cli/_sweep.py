"""``latent-ot sweep``: transform at several alphas, measure each, plot the trade-off."""

from __future__ import annotations

from pathlib import Path

from ..images.folders import expand_inputs, transform_files
from ._console import Console
from ._files import check_distinct_names, matching_references
from ._models import load_operator
from ._options import (
    OPERATOR_SUFFIX,
    add_sweep_options,
    command,
)
from ._report import Metrics, autoencoder_for_metrics, measure_and_report

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    parser = command(
        commands,
        "sweep",
        summary="transform at several alphas, measure and plot the trade-off",
        description=(
            "Transform images at several alphas (running the autoencoder once per image for "
            "all of them), measure each alpha against clean references, and plot the "
            "perception-distortion curve."
        ),
        notes=(
            "Writes to OUTDIR: alpha_<A>/ (the images of each alpha, with their inputs' names "
            "and formats), metrics.csv, metrics.md and curve.png. References are matched to "
            "inputs by file name without extension."
        ),
        examples=[
            f"latent-ot sweep op{OPERATOR_SUFFIX} val/restored/ --reference val/clean/ "
            "--alphas -1:2:0.25 -o sweep/"
        ],
        run=run,
    )
    parser.add_argument("operator", type=Path, metavar="OPERATOR", help="operator file (from fit)")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="restored images: files, directories, globs"
    )
    parser.add_argument(
        "--reference",
        nargs="+",
        required=True,
        metavar="CLEAN",
        help="the clean images, named as the inputs",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output directory"
    )
    add_sweep_options(parser, seed=None, vae=None, patch_size=None)


def run(args, console: Console) -> int:
    operator = load_operator(args, verbose=not args.quiet)
    inputs = expand_inputs(args.inputs)
    references = matching_references(inputs, expand_inputs(args.reference))
    check_distinct_names(inputs)
    outputs = operator.sweep(inputs, args.alphas)
    for alpha, images in zip(args.alphas, outputs, strict=True):
        # transform_files does the writing: names, formats, atomic files, inputs untouched.
        output_of = dict(zip(inputs, images, strict=True))
        folder = args.output / f"alpha_{alpha:g}"
        report = transform_files(output_of.__getitem__, inputs, folder)
        if not report.ok:
            path, reason = report.failed[0]
            raise OSError(f"could not write the output of {path} to {folder}: {reason}")
    metrics = Metrics(
        args.metrics,
        autoencoder=autoencoder_for_metrics(args.metrics, operator.vae, args),
        patch_size=operator.patch_size_,
        device=args.device,
        seed=args.seed if args.seed is not None else 0,
        console=console,
    )
    measure_and_report(args.alphas, outputs, references, metrics, args.output, console)
    return 0
