"""``latent-ot transform``: apply an operator to image files, file by file, safely."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..estimators import LatentOTTransformer
from ..exceptions import AutoencoderNotFoundError, IncompatibleAutoencoderError
from ..images import ImageSource
from ..images.folders import expand_inputs, shard, transform_files
from ..pipeline import SHIFT_COUNTS
from ._console import Abort, Console, one_line, report_failures
from ._models import load_operator
from ._options import (
    OPERATOR_SUFFIX,
    add_autoencoder_options,
    add_exif_orientation_option,
    add_seed,
    command,
    parse_shard,
    real,
)

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    parser = command(
        commands,
        "transform",
        summary="apply an operator to image files",
        description=(
            "Apply a fitted operator to restored images. Each output keeps its input's file "
            "name, format and size; it is written whole or not at all, and never over an "
            "input. A file that cannot be processed is reported with its reason and the "
            "others go on; the exit status is then 1."
        ),
        examples=[
            f"latent-ot transform op{OPERATOR_SUFFIX} restored/ -o realistic/ --alpha 0.3",
            f"torchrun --nproc-per-node 4 -m latent_ot transform op{OPERATOR_SUFFIX} data/ "
            "-o out/ --shard auto",
        ],
        run=run,
    )
    parser.add_argument("operator", type=Path, metavar="OPERATOR", help="operator file (from fit)")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, directories or glob patterns"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output directory"
    )
    parser.add_argument(
        "--alpha",
        type=real("A"),
        default=None,
        metavar="A",
        help="0: transported, 1: the input unchanged, between: a blend (default: the operator's)",
    )
    parser.add_argument(
        "--shifts",
        type=int,
        choices=SHIFT_COUNTS,
        default=None,
        metavar="N",
        help="cycle spinning: average N shifted copies, 1, 2, 4 or 16 (default: the operator's)",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output exists alone (resume an interrupted run)",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=(0, 1),
        metavar="RANK/WORLD|auto",
        help=(
            "process every WORLD-th file from RANK (0-based), e.g. 1/4; 'auto' reads RANK and "
            "WORLD_SIZE from the environment, as torchrun sets them (default: all files)"
        ),
    )
    add_exif_orientation_option(parser)
    add_seed(parser, default=None)
    add_autoencoder_options(parser, vae=None, patch_size=None)


def run(args, console: Console) -> int:
    operator = load_operator(args, verbose=False)  # one bar over the files, not one per file
    if args.alpha is not None:
        operator.set_params(alpha=args.alpha)
    if args.shifts is not None:
        operator.set_params(shifts=args.shifts)
    files = expand_inputs(args.inputs)
    rank, world_size = args.shard
    share = len(shard(files, rank, world_size))
    if world_size > 1:
        console.note(f"shard {rank}/{world_size}: {share} of {len(files)} files")
    # One memory block for the whole loop: each file's transform reuses what the last freed.
    with (
        console.progress(total=share, desc="transforming", unit="img") as bar,
        operator.reusing_freed_memory(),
    ):
        report = transform_files(
            _transform_or_abort(operator, args.exif_orientation),
            files,
            args.output,
            rank=rank,
            world_size=world_size,
            skip_existing=args.skip_existing,
            on_file=lambda _: bar.update(),
        )
    report_failures(console, report.failed)
    summary = f"{len(report.written)} image(s) written to {args.output}"
    if report.skipped:
        summary += f", {len(report.skipped)} skipped (output exists)"
    if report.failed:
        summary += f", {len(report.failed)} failed"
    console.result(summary)
    return 0 if report.ok else 1


def _transform_or_abort(
    operator: LatentOTTransformer, exif_orientation: bool
) -> Callable[[Path], Image.Image]:
    """``operator.transform``, with failures of the model (not of a file) stopping the run.

    A folder run reports a bad file and goes on; an autoencoder that cannot be loaded or
    does not match the operator would fail every file the same way.
    """

    def transform(path: Path) -> Image.Image:
        try:
            return operator.transform(ImageSource(path, exif_orientation=exif_orientation))
        except (AutoencoderNotFoundError, IncompatibleAutoencoderError) as err:
            raise Abort(one_line(err)) from err

    return transform
