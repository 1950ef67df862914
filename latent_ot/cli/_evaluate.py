"""``latent-ot evaluate``: measure images against their clean references."""

from __future__ import annotations

from pathlib import Path

from ..apps.reports import markdown_table, write_csv, write_markdown
from ..images.folders import expand_inputs
from ..metrics import DEFAULT_LATENT_PATCH_SIZE
from ._console import Console
from ._files import matching_references
from ._models import DEFAULT_VAE, load_operator, resolve_vae
from ._options import add_autoencoder_options, add_metrics_option, command
from ._report import Metrics, autoencoder_for_metrics, wants_latent_w2

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    parser = command(
        commands,
        "evaluate",
        summary="measure images against clean references",
        description=(
            "Measure restored (or transformed) images against their clean references: "
            "distortion (PSNR, SSIM, LPIPS) pair by pair, perceptual quality (FID, KID, patch "
            "FID, latent W2) between the two sets. Prints a markdown table."
        ),
        notes="References are matched to images by file name without extension.",
        examples=[
            "latent-ot evaluate --restored realistic/ --reference clean/ --csv table.csv",
            "latent-ot evaluate --restored realistic/ --reference clean/ --operator op.safetensors",
        ],
        run=run,
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
    parser.add_argument(
        "--operator",
        type=Path,
        metavar="OPERATOR",
        help="an operator file (from fit): latent_w2 with its autoencoder and patch size, "
        "the distance it closes (overrides --vae and --patch-size)",
    )
    add_metrics_option(parser)
    add_autoencoder_options(
        parser,
        vae=DEFAULT_VAE,
        patch_size=DEFAULT_LATENT_PATCH_SIZE,
        purpose="the autoencoder of latent_w2: ",
    )


def run(args, console: Console) -> int:
    images = expand_inputs(args.restored)
    references = matching_references(images, expand_inputs(args.reference))
    vae, patch_size = _latent_w2_settings(args, console)
    metrics = Metrics(
        args.metrics,
        autoencoder=autoencoder_for_metrics(args.metrics, vae, args),
        patch_size=patch_size,
        device=args.device,
        seed=0,
        console=console,
    )
    with console.progress(total=len(images), desc="measuring", unit="img") as bar:
        row = metrics(images, references, progress=bar.update)
    rows = [metrics.labelled({"images": " ".join(args.restored), **row})]
    table = markdown_table(rows)
    if args.csv is not None:
        write_csv(rows, args.csv)
    if args.markdown is not None:
        write_markdown(rows, args.markdown)
    console.result(table)
    return 0


def _latent_w2_settings(args, console: Console) -> tuple[str | None, int]:
    """The autoencoder and patch size of latent_w2: the operator's when one is given."""
    if not wants_latent_w2(args.metrics):
        return None, args.patch_size
    if args.operator is None:
        return resolve_vae(args.vae, console), args.patch_size
    args.vae, args.seed = None, None  # the operator's own
    operator = load_operator(args, verbose=False)
    return operator.vae, operator.patch_size_
