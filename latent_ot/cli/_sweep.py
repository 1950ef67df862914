"""``latent-ot sweep``: transform at several alphas, measure each, plot the trade-off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..images.folders import expand_inputs, transform_files
from ..pipeline.statistics import patch_stats
from ._console import Console
from ._files import check_distinct_names, matching_references
from ._models import load_operator
from ._options import (
    OPERATOR_SUFFIX,
    add_sweep_options,
    command,
)
from ._report import Metrics, autoencoder_for_metrics, measure_and_report

if TYPE_CHECKING:
    import torch

    from ..estimators import LatentOTTransformer
    from ..stats import GaussianStats

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
    operator = load_operator(args, verbose=False)  # one bar over the files, not one per image
    inputs = expand_inputs(args.inputs)
    references = matching_references(inputs, expand_inputs(args.reference))
    check_distinct_names(inputs)
    folders = [args.output / f"alpha_{alpha:g}" for alpha in args.alphas]
    autoencoder = autoencoder_for_metrics(args.metrics, operator.vae, args)
    if autoencoder is not None:  # one model for the transport and the metrics
        operator.set_params(vae=autoencoder)
    metrics = Metrics(
        args.metrics,
        autoencoder=autoencoder,
        patch_size=operator.patch_size_,
        device=args.device,
        seed=args.seed if args.seed is not None else 0,
        console=console,
    )
    inputs_latent = InputStats(metrics, len(inputs))
    write_sweep(operator, inputs, args.alphas, folders, inputs_latent.add, console)
    # Each alpha is measured from its written files (what `latent-ot evaluate` on the folder
    # gives); alpha = 1 from the inputs, whose latents the transport has already encoded.
    outputs = [
        inputs if alpha == 1.0 else [folder / path.name for path in inputs]
        for alpha, folder in zip(args.alphas, folders, strict=True)
    ]
    known = {alpha: inputs_latent.stats() for alpha in args.alphas if alpha == 1.0}
    measure_and_report(
        args.alphas, outputs, references, metrics, args.output, console, latent_stats=known
    )
    return 0


def write_sweep(
    operator: LatentOTTransformer,
    inputs: list[Path],
    alphas: list[float],
    folders: list[Path],
    on_encoded: Callable[[int, torch.Tensor], Any],
    console: Console,
) -> None:
    """Transport ``inputs`` one at a time, as ``latent-ot transform`` does, and write each
    alpha's output to its folder before the next, so that memory holds one image's outputs;
    ``on_encoded(index, latents)`` as in :meth:`LatentOTTransformer.sweep`, ``index`` into
    ``inputs``."""
    with (
        console.progress(total=len(inputs), desc="transporting", unit="img") as bar,
        operator.reusing_freed_memory(),
    ):
        for index, path in enumerate(inputs):
            outputs = operator.sweep(
                [path], alphas, on_encoded=lambda _, z, index=index: on_encoded(index, z)
            )
            for folder, (image,) in zip(folders, outputs, strict=True):
                # transform_files does the writing: names, formats, atomic files, inputs untouched;
                # on this thread (prefetch=0): one file, nothing to overlap.
                report = transform_files(lambda _, image=image: image, [path], folder, prefetch=0)
                if not report.ok:
                    _, reason = report.failed[0]
                    raise OSError(f"could not write the output of {path} to {folder}: {reason}")
            bar.update()


class InputStats:
    """The latent statistics of a sweep's inputs, merged as the transport encodes them, for
    the latent W2 of the ``alpha = 1`` row (None where it is not measured or not every input
    was seen)."""

    def __init__(self, metrics: Metrics, count: int) -> None:
        self.patch_size = metrics.patch_size if metrics.autoencoder is not None else None
        self.count = count
        self.seen: set[int] = set()
        self.merged: GaussianStats | None = None

    def add(self, index: int, latents: torch.Tensor) -> None:
        if self.patch_size is None:
            return
        stats = patch_stats(latents, self.patch_size)
        self.merged = stats if self.merged is None else self.merged.merge(stats)
        self.seen.add(index)

    def stats(self) -> GaussianStats | None:
        return self.merged if len(self.seen) == self.count else None
