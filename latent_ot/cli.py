"""The ``latent-ot`` command: fit an operator, transform folders, sweep alpha, evaluate, demo.

::

    latent-ot demo                                      # the method, start to end, offline
    latent-ot fit --restored restored/ --natural photos/ -o operator.safetensors
    latent-ot transform operator.safetensors restored/ -o realistic/ --alpha 0.5
    latent-ot sweep operator.safetensors val/restored/ --reference val/clean/ -o sweep/
    latent-ot evaluate --restored realistic/ --reference clean/

Results (tables, paths) go to stdout; progress bars, notes and errors go to stderr. Exit
status: 0 when everything worked, 1 when something failed (some files, a model, the data), 2
for a usage error. An error is one line; ``--debug`` raises it with its traceback instead.
Operators are written in the safe format of :mod:`latent_ot.serialization` (``.safetensors``):
loading one never runs code.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import textwrap
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .autoencoders import MODELS_DIR_ENV, PRESETS, load_autoencoder
from .demo import DEMO_PHOTOS, degrade_and_restore, sample_photos
from .devices import resolve_device
from .estimators import LatentOTTransformer
from .exceptions import AutoencoderNotFoundError, IncompatibleAutoencoderError
from .folders import expand_inputs, save_image_atomically, shard, transform_files
from .metrics import METRICS, evaluate
from .reporting import (
    PERCEPTION_AXES,
    collage,
    markdown_table,
    plot_perception_distortion,
    write_csv,
    write_markdown,
)

__all__ = ["build_parser", "main", "resolve_vae"]

OPERATOR_SUFFIX = ".safetensors"
DEFAULT_ALPHAS = "0:1:0.25"

# `--vae auto` takes the first of these found in the local models directory; the hub default
# is the paper's autoencoder.
_AUTO_VAE_ORDER = tuple(dict.fromkeys(("sd-vae-ft-mse", "taef2", "taesd", *PRESETS)))
_HUB_DEFAULT = "sd-vae-ft-mse"

_MIN_DEMO_IMAGES = 4  # two to fit on, two to transform (FID-like metrics need two)


# --------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``latent-ot`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when something failed, 2 for a usage error.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(_attach_dash_values(argv, ("--alphas",)))
    except SystemExit as exit_:  # --help, --version or a usage error: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    console = _Console(quiet=args.quiet)
    try:
        return args.run(args, console)
    except KeyboardInterrupt:
        if args.debug:
            raise
        console.error("interrupted")
        return 130
    except Exception as err:
        if args.debug:
            raise
        console.error(_one_line(err))
        return 1


def _attach_dash_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """Turn ``--alphas -1:2:0.25`` into ``--alphas=-1:2:0.25``.

    argparse takes a value starting with ``-`` that is not a plain negative number for an
    option, and would refuse the ranges the help shows.
    """
    joined: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in options:
            value = next(values, None)
            if value is not None and value.startswith("-"):
                joined.append(f"{arg}={value}")
                continue
            joined.append(arg)
            if value is not None:
                joined.append(value)
        else:
            joined.append(arg)
    return joined


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else ""
    if isinstance(err, (OSError, ValueError, TypeError, ImportError, _Abort)) and message:
        return message
    # Not a failure we expect: name it, and say how to see where it came from.
    return f"{type(err).__name__}: {message} (run with --debug for the traceback)"


class _Abort(RuntimeError):
    """A failure that concerns every file, not one: stops a folder run at once."""


class _Console:
    """Where the command talks: results to stdout, notes, errors and progress to stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def result(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            tqdm.write(text, file=sys.stderr)  # tqdm.write: not through a running bar

    def error(self, text: str) -> None:
        tqdm.write(f"latent-ot: error: {text}", file=sys.stderr)

    def progress(self, iterable=None, **kwargs) -> tqdm:
        return tqdm(iterable, disable=self.quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)


# --------------------------------------------------------------------------------------------
# The parser


_DESCRIPTION = """\
Deep Optimal Transport (Adrai et al., NeurIPS 2023): make the outputs of any image
restoration method look like natural photos. An operator is fitted once on restored images
and on natural images (unpaired, a dozen of each is enough); it then moves new restored
images towards natural image statistics, in the latent space of a pretrained autoencoder.
Alpha trades realism (0) for fidelity to the restored input (1)."""

_VAE_NOTE = (
    f"autoencoders (--vae): a preset ({', '.join(PRESETS)}), a Hugging Face hub id, a local "
    f"model directory, or 'pixel' (transport in pixel space). Presets and hub ids are looked "
    f"up first in ${MODELS_DIR_ENV}/<name>/."
)

_EPILOG = f"""\
start here:
  latent-ot demo                 runs the whole method on sample photos, offline

typical use:
  latent-ot fit --restored restored/ --natural photos/ -o operator{OPERATOR_SUFFIX}
  latent-ot transform operator{OPERATOR_SUFFIX} new_restored/ -o realistic/ --alpha 0.3
  latent-ot sweep operator{OPERATOR_SUFFIX} val/restored/ --reference val/clean/ -o sweep/

{{vae_note}}

Run "latent-ot COMMAND --help" for the options of a command."""


def _wrap(text: str) -> str:
    """``text`` filled to the terminal's width, as argparse fills option help (88 at most)."""
    return textwrap.fill(text, width=min(88, shutil.get_terminal_size().columns - 2))


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``latent-ot`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="latent-ot",
        description=_wrap(_DESCRIPTION),
        epilog=_EPILOG.format(vae_note=_wrap(_VAE_NOTE)),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_output_options(parser, default=False)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True
    for add in (_add_demo, _add_fit, _add_transform, _add_sweep, _add_evaluate):
        add(commands)
    return parser


def _command(commands, name: str, *, summary, description, notes="", examples=(), run):
    """A subcommand's parser: its help reads as description, options, notes, examples."""
    epilog = _wrap(notes) if notes else ""
    if examples:
        epilog += "\n\nexamples:\n" + "\n".join(f"  {example}" for example in examples)
    parser = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description),
        epilog=epilog.strip(),
        formatter_class=_Formatter,
    )
    parser.set_defaults(run=run)
    _add_output_options(parser, default=argparse.SUPPRESS)
    return parser


def _add_output_options(parser, default: Any) -> None:
    # Accepted before and after the command; a command's own default must not override a
    # value given before it, hence SUPPRESS there.
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress bars or notes"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on an error, show the traceback instead of one line",
    )


def _add_autoencoder_options(
    parser, *, vae_default: str | None, patch_size: bool, purpose: str = ""
) -> None:
    group = parser.add_argument_group("autoencoder and device")
    if vae_default is None:
        vae_help = "use another copy of the operator's autoencoder (same latent space)"
    else:
        vae_help = (
            f"{purpose}preset, hub id, directory or 'pixel'; 'auto' picks a local copy in "
            f"${MODELS_DIR_ENV}, else the hub's {_HUB_DEFAULT}, else pixel "
            "(default: %(default)s)"
        )
    group.add_argument("--vae", default=vae_default, metavar="NAME|DIR", help=vae_help)
    if patch_size:
        group.add_argument(
            "--patch-size",
            type=_int_at_least(1),
            default=3,
            metavar="P",
            help="side of the latent patches (default: %(default)s)",
        )
    group.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)",
    )
    group.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="compute dtype of the autoencoder; 'auto': float16 on CUDA, float32 elsewhere "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=4,
        metavar="N",
        help="images encoded together (default: %(default)s)",
    )


def _add_seed(parser, default: int | None) -> None:
    where = "the operator's" if default is None else "%(default)s"
    parser.add_argument(
        "--seed",
        type=int,
        default=default,
        help=f"seed of the transport noise (used when the map is stochastic; default: {where})",
    )


def _add_metrics_option(parser) -> None:
    parser.add_argument(
        "--metrics",
        type=_metric_names,
        default=None,
        metavar="auto|NAMES",
        help=(
            "'auto': every metric that can run here (networks that cannot be loaded are "
            f"skipped, with a note); or names among {', '.join(METRICS)}, comma-separated, "
            "which must all run (default: auto)"
        ),
    )


def _add_alphas_option(parser) -> None:
    parser.add_argument(
        "--alphas",
        type=_parse_alphas,
        default=_parse_alphas(DEFAULT_ALPHAS),
        metavar="SPEC",
        help=(
            "START:STOP:STEP (both ends included, e.g. -1:2:0.25) or a list such as "
            f"0,0.5,1 (default: {DEFAULT_ALPHAS})"
        ),
    )


def _add_demo(commands) -> None:
    parser = _command(
        commands,
        "demo",
        summary="run the whole method on sample photos (offline)",
        description=(
            "Run the method start to end on photos that ship with scikit-image: add Gaussian "
            "noise, denoise with non-local means (the 'restoration'), fit an operator on half "
            "of the photos, transport the other half, and measure and plot the "
            "perception-distortion trade-off over alpha."
        ),
        notes=(
            "Writes to the output directory: collage.png (degraded / restored / transported / "
            "clean), curve.png, metrics.csv, metrics.md, operator.safetensors and the images. "
            f"With no pretrained autoencoder here (none in ${MODELS_DIR_ENV}, no hub), it says "
            "so and runs the pixel-space variant."
        ),
        examples=["latent-ot demo", "LATENT_OT_MODELS_DIR=~/models latent-ot demo -o demo/"],
        run=_run_demo,
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("latent-ot-demo"),
        metavar="DIR",
        help="output directory (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=_int_in(_MIN_DEMO_IMAGES, len(DEMO_PHOTOS)),
        default=len(DEMO_PHOTOS),
        metavar="N",
        help=(
            f"sample photos to use, {_MIN_DEMO_IMAGES} to {len(DEMO_PHOTOS)} (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--size",
        type=_int_at_least(32),
        default=192,
        metavar="PX",
        help="side of the square crops the photos are resized to (default: %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=50.0,
        metavar="SIGMA",
        help="standard deviation of the noise, on the 0-255 scale (default: %(default)s)",
    )
    _add_alphas_option(parser)
    _add_metrics_option(parser)
    _add_seed(parser, default=0)
    _add_autoencoder_options(parser, vae_default="auto", patch_size=True)


def _add_fit(commands) -> None:
    parser = _command(
        commands,
        "fit",
        summary="fit an operator on restored and natural images",
        description=(
            "Fit an operator: the Gaussian statistics of the latent patches of restored images "
            "(outputs of your restoration method) and of natural images (unpaired, any "
            "number), and the optimal transport map between them."
        ),
        notes="IMAGES are image files, directories (their image files) or quoted glob patterns.",
        examples=[
            f"latent-ot fit --restored 'out/*.png' --natural photos/ -o op{OPERATOR_SUFFIX}",
            f"latent-ot fit --restored out/ --natural photos/ -o op{OPERATOR_SUFFIX} --vae taef2",
        ],
        run=_run_fit,
    )
    parser.add_argument(
        "--restored", nargs="+", required=True, metavar="IMAGES", help="restored images"
    )
    parser.add_argument(
        "--natural", nargs="+", required=True, metavar="IMAGES", help="natural images"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OPERATOR",
        help=f"operator file to write (safe format; suffix {OPERATOR_SUFFIX})",
    )
    parser.add_argument(
        "--fold-window",
        choices=("uniform", "gaussian"),
        default="uniform",
        help="weights of overlapping patches when folded back (default: %(default)s)",
    )
    _add_seed(parser, default=0)
    _add_autoencoder_options(parser, vae_default=_HUB_DEFAULT, patch_size=True)


def _add_transform(commands) -> None:
    parser = _command(
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
        run=_run_transform,
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
        type=_finite_float,
        default=None,
        metavar="A",
        help="0: transported, 1: the input unchanged, between: a blend (default: the operator's)",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output exists alone (resume an interrupted run)",
    )
    parser.add_argument(
        "--shard",
        type=_parse_shard,
        default=(0, 1),
        metavar="RANK/WORLD|auto",
        help=(
            "process every WORLD-th file from RANK (0-based), e.g. 1/4; 'auto' reads RANK and "
            "WORLD_SIZE from the environment, as torchrun sets them (default: all files)"
        ),
    )
    _add_seed(parser, default=None)
    _add_autoencoder_options(parser, vae_default=None, patch_size=False)


def _add_sweep(commands) -> None:
    parser = _command(
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
        run=_run_sweep,
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
    _add_alphas_option(parser)
    _add_metrics_option(parser)
    _add_seed(parser, default=None)
    _add_autoencoder_options(parser, vae_default=None, patch_size=False)


def _add_evaluate(commands) -> None:
    parser = _command(
        commands,
        "evaluate",
        summary="measure images against clean references",
        description=(
            "Measure restored (or transformed) images against their clean references: "
            "distortion (PSNR, SSIM, LPIPS) pair by pair, perceptual quality (FID, KID, patch "
            "FID, latent W2) between the two sets. Prints a markdown table."
        ),
        notes="References are matched to images by file name without extension.",
        examples=["latent-ot evaluate --restored realistic/ --reference clean/ --csv table.csv"],
        run=_run_evaluate,
    )
    parser.add_argument(
        "--restored", nargs="+", required=True, metavar="IMAGES", help="the images to measure"
    )
    parser.add_argument(
        "--reference", nargs="+", required=True, metavar="CLEAN", help="their clean references"
    )
    parser.add_argument("--csv", type=Path, metavar="PATH", help="also write the table as CSV")
    parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="also write the table as markdown"
    )
    _add_metrics_option(parser)
    _add_autoencoder_options(
        parser, vae_default="auto", patch_size=True, purpose="the autoencoder of latent_w2: "
    )


# -- argument types: each raises ArgumentTypeError, which argparse reports as a usage error --


def _parse_alphas(text: str) -> list[float]:
    """Alphas from ``START:STOP:STEP`` (both ends included) or a comma-separated list.

    Examples
    --------
    >>> _parse_alphas("-1:2:0.75")
    [-1.0, -0.25, 0.5, 1.25, 2.0]
    >>> _parse_alphas("0,0.5,1")
    [0.0, 0.5, 1.0]
    """
    expected = (
        "expected START:STOP:STEP with STEP > 0 and STOP >= START (e.g. -1:2:0.25) "
        f"or a comma-separated list (e.g. 0,0.5,1); got {text!r}"
    )
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not step > 0 or stop < start:
                raise ValueError(expected)
            count = math.floor((stop - start) / step + 1e-9) + 1
            # Rounded so that 0.1 steps give 0.3, not 0.30000000000000004.
            values = [round(start + k * step, 10) for k in range(min(count, 10_001))]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if len(values) > 10_000 or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected at most 10000 finite alphas; got {text!r}")
    return list(dict.fromkeys(values))


def _parse_shard(text: str) -> tuple[int, int]:
    """``RANK/WORLD`` (0-based rank) as a pair; ``auto`` reads ``RANK`` and ``WORLD_SIZE``.

    Examples
    --------
    >>> _parse_shard("1/4")
    (1, 4)
    """
    if text == "auto":
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            raise argparse.ArgumentTypeError(
                "'auto' reads the environment variables RANK and WORLD_SIZE, which are not set "
                "(torchrun sets them); or give RANK/WORLD, e.g. 0/2"
            )
        text = f"{rank}/{world}"
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(
            f"expected RANK/WORLD with 0 <= RANK < WORLD (e.g. 1/4), or 'auto'; got {text!r}"
        )
    return int(match[1]), int(match[2])


def _int_in(low: int, high: float) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            bound = f"an integer >= {low}" if high == math.inf else f"an integer in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected {bound}; got {text!r}")
        return value

    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    return _int_in(low, math.inf)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def _metric_names(text: str) -> list[str] | None:
    if text == "auto":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown) or text!r}; expected 'auto' or names among "
            f"{', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# Commands


def _run_fit(args, console: _Console) -> int:
    restored, natural = expand_inputs(args.restored), expand_inputs(args.natural)
    _check_output_file(args.output)
    operator = _new_operator(args, resolve_vae(args.vae, console), fold_window=args.fold_window)
    operator.fit(restored, natural)
    operator.save(args.output)
    console.result(
        f"wrote {args.output}: fitted on {operator.n_images_restored_} restored and "
        f"{operator.n_images_natural_} natural images with {operator.vae} (patch size "
        f"{operator.patch_size}); latent W2 between them: {operator.w2_:.4g}"
    )
    return 0


def _new_operator(args, vae: str, **params) -> LatentOTTransformer:
    return LatentOTTransformer(
        vae=vae,
        patch_size=args.patch_size,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        random_state=args.seed,
        verbose=not args.quiet,
        **params,
    )


def _run_transform(args, console: _Console) -> int:
    operator = _load_operator(args, verbose=False)  # one bar over the files, not one per file
    if args.alpha is not None:
        operator.set_params(alpha=args.alpha)
    files = expand_inputs(args.inputs)
    rank, world_size = args.shard
    share = len(shard(files, rank, world_size))
    if world_size > 1:
        console.note(f"shard {rank}/{world_size}: {share} of {len(files)} files")
    with console.progress(total=share, desc="transforming", unit="img") as bar:
        report = transform_files(
            _transform_or_abort(operator),
            files,
            args.output,
            rank=rank,
            world_size=world_size,
            skip_existing=args.skip_existing,
            on_file=lambda _: bar.update(),
        )
    for path, reason in report.failed:
        console.error(f"{path}: {_first_line(reason)}")
    summary = f"{len(report.written)} image(s) written to {args.output}"
    if report.skipped:
        summary += f", {len(report.skipped)} skipped (output exists)"
    if report.failed:
        summary += f", {len(report.failed)} failed"
    console.result(summary)
    return 0 if report.ok else 1


def _transform_or_abort(operator: LatentOTTransformer) -> Callable[[Path], Image.Image]:
    """``operator.transform``, with failures of the model (not of a file) stopping the run.

    A folder run reports a bad file and goes on; an autoencoder that cannot be loaded or
    does not match the operator would fail every file the same way.
    """

    def transform(path: Path) -> Image.Image:
        try:
            return operator.transform(path)
        except (AutoencoderNotFoundError, IncompatibleAutoencoderError) as err:
            raise _Abort(_one_line(err)) from err

    return transform


def _run_sweep(args, console: _Console) -> int:
    operator = _load_operator(args, verbose=not args.quiet)
    inputs = expand_inputs(args.inputs)
    references = _matching_references(inputs, expand_inputs(args.reference))
    _check_distinct_names(inputs)
    outputs = operator.sweep(inputs, args.alphas)
    for alpha, images in zip(args.alphas, outputs, strict=True):
        # transform_files does the writing: names, formats, atomic files, inputs untouched.
        output_of = dict(zip(inputs, images, strict=True))
        folder = args.output / f"alpha_{alpha:g}"
        report = transform_files(output_of.__getitem__, inputs, folder)
        if not report.ok:
            path, reason = report.failed[0]
            raise OSError(f"could not write the output of {path} to {folder}: {reason}")
    metrics = _Metrics(
        args.metrics,
        autoencoder=_autoencoder_for_metrics(args.metrics, operator.vae, args),
        patch_size=operator.patch_size,
        device=args.device,
        seed=args.seed if args.seed is not None else 0,
        console=console,
    )
    _measure_and_report(args.alphas, outputs, references, metrics, args.output, console)
    return 0


def _run_evaluate(args, console: _Console) -> int:
    images = expand_inputs(args.restored)
    references = _matching_references(images, expand_inputs(args.reference))
    vae = resolve_vae(args.vae, console) if _wants_latent_w2(args.metrics) else None
    metrics = _Metrics(
        args.metrics,
        autoencoder=_autoencoder_for_metrics(args.metrics, vae, args),
        patch_size=args.patch_size,
        device=args.device,
        seed=0,
        console=console,
    )
    rows = [{"images": " ".join(args.restored), **metrics(images, references)}]
    table = markdown_table(rows)
    if args.csv is not None:
        write_csv(rows, args.csv)
    if args.markdown is not None:
        write_markdown(rows, args.markdown)
    console.result(table)
    return 0


def _run_demo(args, console: _Console) -> int:
    vae = resolve_vae(args.vae, console)
    alphas = sorted({*args.alphas, 0.0, 1.0})  # the curve's two ends, marked on the plot
    clean = sample_photos(args.images, args.size)
    degraded, restored = degrade_and_restore(
        clean,
        args.noise / 255,
        args.seed,
        progress=lambda pairs: console.progress(pairs, desc="degrading and restoring", unit="img"),
    )
    names = list(clean)
    fit_on, shown = names[: len(names) // 2], names[len(names) // 2 :]
    console.note(
        f"fitting on {len(fit_on)} restored photos and their clean versions; "
        f"transforming {len(shown)} others"
    )
    operator = _new_operator(args, vae)
    operator.fit([restored[name] for name in fit_on], [clean[name] for name in fit_on])
    outputs = operator.sweep([restored[name] for name in shown], alphas)

    output = args.output
    output.mkdir(parents=True, exist_ok=True)
    operator.save(output / f"operator{OPERATOR_SUFFIX}")
    rows_of_images = {
        "degraded": [degraded[name] for name in shown],
        "restored": [restored[name] for name in shown],
        "transported": outputs[alphas.index(0.0)],
        "clean": [clean[name] for name in shown],
    }
    for folder, images in rows_of_images.items():
        (output / folder).mkdir(exist_ok=True)
        for name, image in zip(shown, images, strict=True):
            save_image_atomically(Image.fromarray(image), output / folder / f"{name}.png")
    save_image_atomically(collage(rows_of_images, shown), output / "collage.png")

    metrics = _Metrics(
        args.metrics,
        autoencoder=_autoencoder_for_metrics(args.metrics, vae, args),
        patch_size=args.patch_size,
        device=args.device,
        seed=args.seed,
        console=console,
    )
    reference = rows_of_images["clean"]
    _measure_and_report(alphas, outputs, reference, metrics, output, console)
    console.result(f"collage: {output / 'collage.png'}")
    console.result(f"operator: {output / f'operator{OPERATOR_SUFFIX}'}")
    return 0


# --------------------------------------------------------------------------------------------
# Operators and autoencoders


def resolve_vae(spec: str, console: _Console | None = None) -> str:
    """The autoencoder to use: ``spec`` itself, or for ``"auto"`` the best one available here.

    ``"auto"`` takes the first preset found in the local models directory
    (``$LATENT_OT_MODELS_DIR``; sd-vae-ft-mse first, then taef2, taesd, ...), else the hub's
    sd-vae-ft-mse if it can be loaded (from the Hugging Face cache or the network), else
    ``"pixel"``, the method in pixel space. The choice, and why, is noted on ``console``.

    Examples
    --------
    >>> resolve_vae("taef2")
    'taef2'
    """
    say = console.note if console is not None else lambda text: None
    if spec != "auto":
        return spec
    root = os.environ.get(MODELS_DIR_ENV)
    local = _local_preset(root)
    if local is not None:
        say(f"autoencoder: {local} (local copy in ${MODELS_DIR_ENV}={root})")
        return local
    hub_reason = _hub_unreachable()
    if hub_reason is None:
        try:
            with warnings.catch_warnings():  # the hub's deprecation chatter; we say what happened
                warnings.simplefilter("ignore")
                load_autoencoder(_HUB_DEFAULT)
        except (OSError, ValueError) as err:
            hub_reason = _hub_failure(err)
        else:
            say(f"autoencoder: {_HUB_DEFAULT} (Hugging Face hub)")
            return _HUB_DEFAULT
    local_reason = (
        f"${MODELS_DIR_ENV} is not set"
        if not root
        else f"${MODELS_DIR_ENV}={root} holds none of {', '.join(_AUTO_VAE_ORDER)}"
    )
    say(
        f"no pretrained autoencoder available ({local_reason}; {hub_reason}): running the "
        f"pixel-space variant. To use one, set {MODELS_DIR_ENV} to a directory holding "
        f"sd-vae-ft-mse/ or taef2/ (taef2_encoder.pth and taef2_decoder.pth), or go online."
    )
    return "pixel"


def _local_preset(root: str | None) -> str | None:
    if not root:
        return None
    return next((name for name in _AUTO_VAE_ORDER if (Path(root) / name).is_dir()), None)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None if it answers (or is not asked).

    Asked first because, offline, a download retries for half a minute before it gives up.
    With ``HF_HUB_OFFLINE`` set, loading reads the local cache only: nothing to ask.
    """
    if _hub_offline():
        return None
    from huggingface_hub.constants import ENDPOINT

    try:
        urllib.request.urlopen(urllib.request.Request(ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"the Hugging Face hub ({ENDPOINT}) is unreachable: {reason}"
    return None


def _hub_failure(err: BaseException) -> str:
    hub_id = PRESETS[_HUB_DEFAULT].hub_id
    if _hub_offline():
        return f"{hub_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    if isinstance(err, AutoencoderNotFoundError):
        return f"{hub_id} is neither in the Hugging Face cache nor reachable on the hub"
    return f"{hub_id} could not be loaded ({_one_line(err)})"


def _load_operator(args, *, verbose: bool) -> LatentOTTransformer:
    """The operator file of ``args``, with the device options of the command line."""
    if not args.operator.is_file():
        raise FileNotFoundError(
            f"operator file {args.operator} not found; create one with 'latent-ot fit'"
        )
    operator = LatentOTTransformer.load(args.operator)
    overrides = {
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "verbose": verbose,
    }
    if args.vae is not None:
        overrides["vae"] = args.vae
    if args.seed is not None:
        overrides["random_state"] = args.seed
    return operator.set_params(**overrides)


def _check_output_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)


def _check_distinct_names(paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise ValueError(
                f"{seen[path.name]} and {path} have the same name: their outputs would collide"
            )
        seen[path.name] = path


def _matching_references(images: list[Path], references: list[Path]) -> list[Path]:
    """The reference of each image: the one with its file name without extension.

    Examples
    --------
    >>> from pathlib import Path
    >>> found = _matching_references([Path("out/b.png")], [Path("a.png"), Path("ref/b.jpg")])
    >>> [path.name for path in found]
    ['b.jpg']
    """
    by_stem: dict[str, list[Path]] = {}
    for reference in references:
        by_stem.setdefault(reference.stem, []).append(reference)
    missing = [image.name for image in images if image.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ValueError(
            f"no reference image for {shown}: references are matched to images by file name "
            "without extension"
        )
    for image in images:
        if len(by_stem[image.stem]) > 1:
            found = ", ".join(str(path) for path in by_stem[image.stem])
            raise ValueError(f"several references could be {image.name}'s: {found}")
    return [by_stem[image.stem][0] for image in images]


# --------------------------------------------------------------------------------------------
# Metrics and the report of a sweep


def _wants_latent_w2(names: list[str] | None) -> bool:
    return names is None or "latent_w2" in names


def _autoencoder_for_metrics(names: list[str] | None, vae: Any, args) -> Any:
    """The autoencoder of latent W2, loaded once for every row of a table (None: not needed)."""
    if vae is None or not _wants_latent_w2(names):
        return None
    return load_autoencoder(vae, device=resolve_device(args.device), dtype=args.dtype)


class _Metrics:
    """Computes the same metrics for every row of a table.

    With ``names=None`` the first row takes every metric that can run here; a metric whose
    network cannot be loaded (a missing package, weights that cannot be downloaded) is left
    out, noted once in one line, and not tried again for the next rows.
    """

    def __init__(self, names, *, autoencoder, patch_size, device, seed, console) -> None:
        self.names = names
        self.autoencoder = autoencoder
        self.patch_size = patch_size
        self.device = device
        self.seed = seed
        self.console = console

    def __call__(self, images, reference) -> dict[str, float]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = evaluate(
                images,
                reference,
                metrics=self.names,
                autoencoder=self.autoencoder,
                patch_size=self.patch_size,
                device=self.device,
                random_state=self.seed,
            )
        skipped = [str(w.message) for w in caught if _is_skip_note(w.message)]
        for other in (w for w in caught if not _is_skip_note(w.message)):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        if self.names is None:
            self.names = list(values)
            if skipped:
                reasons = "; ".join(_skip_reason(message) for message in skipped)
                self.console.note(f"metrics skipped: {reasons}")
        return values


_SKIP_PREFIX = "evaluate: skipping "


def _is_skip_note(message: Warning | str) -> bool:
    return str(message).startswith(_SKIP_PREFIX)


def _skip_reason(message: str) -> str:
    """``lpips (needs torchvision (pip install torchvision))`` from evaluate's warning."""
    names, _, reason = message.removeprefix(_SKIP_PREFIX).partition(": ")
    reason = _first_line(reason)
    for tail in (", which could not be", "; or pass"):
        reason = reason.split(tail)[0]
    return f"{names} ({reason[:150]})"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _measure_and_report(alphas, outputs, reference, metrics, output: Path, console) -> None:
    """Measure a sweep's outputs, alpha by alpha; write the table (CSV, markdown) and the
    curve to ``output``; print the table and the paths."""
    measuring = console.progress(outputs, desc="measuring", unit="alpha")
    rows = [
        {"alpha": alpha, **metrics(images, reference)}
        for alpha, images in zip(alphas, measuring, strict=True)
    ]
    write_csv(rows, output / "metrics.csv")
    table = write_markdown(rows, output / "metrics.md")
    console.result(table)
    console.result(f"table: {output / 'metrics.csv'}, {output / 'metrics.md'}")
    curve = plot_perception_distortion(rows)
    if curve is None:
        console.note("no curve: the table needs psnr and one of " + ", ".join(PERCEPTION_AXES))
    else:
        save_image_atomically(curve, output / "curve.png")
        console.result(f"curve: {output / 'curve.png'}")
