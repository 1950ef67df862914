"""``latent-ot prior``: the natural-image statistics of some photos, for ``fit --prior``."""

from __future__ import annotations

from pathlib import Path

from ..images.folders import expand_inputs
from ..priors import build_prior
from ._console import Console
from ._files import check_output_file
from ._models import DEFAULT_VAE, resolve_vae
from ._options import add_autoencoder_options, command, integer

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    parser = command(
        commands,
        "prior",
        summary="build a natural-image prior from photos, for 'fit --prior'",
        description=(
            "Build a natural-image prior: the Gaussian statistics of the latent patches of "
            "natural photos, written to a file (statistics only: safe to share, loading it "
            "runs no code). 'latent-ot fit --prior FILE' then needs no natural images. "
            f"{DEFAULT_VAE} has one built in; build one for another autoencoder, another "
            "patch size, or photos of your own domain."
        ),
        notes=(
            "IMAGES are image files, directories (their image files) or quoted glob patterns. "
            "Fit with the same --vae and --patch-size as the prior."
        ),
        examples=[
            "latent-ot prior photos/ -o photos.safetensors",
            "latent-ot prior 'faces/*.jpg' -o faces.safetensors --vae sd-vae-ft-mse",
        ],
        run=run,
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGES", help="natural images: files, directories, globs"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="prior file to write (e.g. prior.safetensors)",
    )
    parser.add_argument(
        "--scales",
        nargs="+",
        type=integer("PX", 8),
        metavar="PX",
        help="long sides, in pixels, the photos are resized to, one set of statistics each; fit "
        "uses the one nearest to the size of the restored images (default: the photos' own)",
    )
    parser.add_argument(
        "--patch-size",
        nargs="+",
        type=integer("P", 1),
        default=[1, 2, 3],
        metavar="P",
        help="sides of the latent patches to keep statistics for; fit needs the one it uses "
        "(default: 1 2 3, which holds what patch size 'auto' picks for any autoencoder)",
    )
    add_autoencoder_options(parser, vae=DEFAULT_VAE, patch_size=None)


def run(args, console: Console) -> int:
    images = expand_inputs(args.images)
    check_output_file(args.output)
    vae = resolve_vae(args.vae, console)
    prior = build_prior(
        images,
        vae,
        scales=args.scales,
        patch_sizes=args.patch_size,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        verbose=not args.quiet,
    )
    prior.save(args.output)
    sizes = ", ".join(map(str, prior.patch_sizes))
    scales = ", ".join(map(str, prior.scales))
    console.result(
        f"wrote {args.output}: natural-image prior of {len(images)} images with {vae} (patch "
        f"sizes {sizes}, scales {scales} px); use it with "
        f"'latent-ot fit --prior {args.output} --vae {vae}'"
    )
    return 0
