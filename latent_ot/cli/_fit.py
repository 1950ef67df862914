"""``latent-ot fit``: fit an operator on restored images, and natural images or a prior."""

from __future__ import annotations

from pathlib import Path

from ..autoencoders import Autoencoder, load_autoencoder
from ..estimators import GaussianOTTransformer, LatentOTTransformer
from ..images import ImageSource
from ..images.folders import expand_inputs
from ..pipeline import SHIFT_COUNTS
from ..priors import NaturalPrior
from ..recipes import auto_map, auto_patch_size
from ._console import Console, failure_reason, report_failures
from ._files import check_output_file
from ._models import DEFAULT_VAE, new_operator, resolve_vae
from ._options import (
    OPERATOR_SUFFIX,
    add_autoencoder_options,
    add_exif_orientation_option,
    add_seed,
    add_sha256_option,
    command,
    fraction_or_auto,
    positive_or_none,
)

__all__ = ["add_parser", "run"]


def add_parser(commands) -> None:
    parser = command(
        commands,
        "fit",
        summary="fit an operator on restored images (and natural images or a prior)",
        description=(
            "Fit an operator: the Gaussian statistics of the latent patches of restored images "
            "(outputs of your restoration method) and of natural images, and the optimal "
            "transport map between them. The natural statistics come from --natural images "
            "(unpaired with the restored ones, any number), from a --prior file written by "
            "'latent-ot prior', or by default from the built-in prior of the autoencoder."
        ),
        notes=(
            "IMAGES are image files, directories (their image files) or quoted glob patterns. "
            f"The built-in prior exists for the default autoencoder, {DEFAULT_VAE}; for "
            "another, pass --natural or a --prior built with it."
        ),
        examples=[
            f"latent-ot fit --restored out/ -o op{OPERATOR_SUFFIX}",
            f"latent-ot fit --restored 'out/*.png' --natural photos/ -o op{OPERATOR_SUFFIX}",
            f"latent-ot fit --restored out/ --prior photos.safetensors -o op{OPERATOR_SUFFIX}",
        ],
        run=run,
    )
    parser.add_argument(
        "--restored", nargs="+", required=True, metavar="IMAGES", help="restored images"
    )
    natural = parser.add_mutually_exclusive_group()
    natural.add_argument(
        "--natural",
        nargs="+",
        metavar="IMAGES",
        help="natural images (default: the built-in prior)",
    )
    natural.add_argument(
        "--prior",
        type=Path,
        metavar="FILE",
        help="natural-image prior file, from 'latent-ot prior' (default: the built-in one)",
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
        "--low-frequency-sigma",
        type=positive_or_none("--low-frequency-sigma"),
        default=LatentOTTransformer().low_frequency_sigma,
        metavar="PX|none",
        help="the outputs' band under a Gaussian low-pass of PX pixels comes from the input: "
        "the transport changes detail, not colours and shading; 'none' decodes as the paper "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--shifts",
        type=int,
        choices=SHIFT_COUNTS,
        default=LatentOTTransformer().shifts,
        metavar="N",
        help="cycle spinning: average N copies shifted by fractions of the latent grid "
        "(1, 2, 4 or 16), which cancels the grid pattern a small decoder can draw; each "
        "costs one more encode and decode (default: %(default)s)",
    )
    transport = parser.add_argument_group(
        "the Gaussian map", "settings of the map; 'auto': the recipe's for the patch size"
    )
    transport.add_argument(
        "--rtol",
        type=fraction_or_auto("--rtol"),
        default="auto",
        metavar="R|auto",
        help="directions in which the restored patches vary less than R times their largest "
        "variance count as lost; 'auto': 0.05 for single-pixel patches, the paper's "
        "float64 precision for larger ones (default: %(default)s)",
    )
    transport.add_argument(
        "--noise-scale",
        type=fraction_or_auto("--noise-scale"),
        default="auto",
        metavar="S|auto",
        help="noise drawn where the restored images lack variance, as a fraction of the "
        "natural standard deviation: 0 leaves those directions at the natural mean, 1 is the "
        "paper's stochastic map, 'auto' 0 for single-pixel patches and 1 for larger ones "
        "(default: %(default)s)",
    )
    add_sha256_option(parser, "the --prior file")
    add_exif_orientation_option(parser)
    add_seed(parser, default=0)
    add_autoencoder_options(parser, vae=DEFAULT_VAE, patch_size="auto")


def transport_of(args, operator: LatentOTTransformer) -> GaussianOTTransformer | None:
    """The map ``--rtol`` and ``--noise-scale`` ask for; None when both are ``auto``.

    One of them given: the other is what ``auto`` means for the patch size, which for
    ``--patch-size auto`` depends on the autoencoder's latent channels.
    """
    given = {
        name: value
        for name, value in (("rtol", args.rtol), ("noise_scale", args.noise_scale))
        if value != "auto"
    }
    if not given:
        return None
    patch_size = operator.patch_size
    if patch_size == "auto":
        vae = operator.vae
        channels = (vae if isinstance(vae, Autoencoder) else load_autoencoder(vae)).latent_channels
        patch_size = auto_patch_size(channels)
    return GaussianOTTransformer(**(auto_map(patch_size) | given))


def run(args, console: Console) -> int:
    restored = expand_inputs(args.restored)
    natural = expand_inputs(args.natural) if args.natural is not None else None
    if args.prior is not None and not args.prior.is_file():
        raise FileNotFoundError(
            f"--prior {args.prior} not found; build one with 'latent-ot prior IMAGES -o FILE'"
        )
    if args.sha256 is not None:
        if args.prior is None:
            raise ValueError("--sha256 pins the --prior file: pass --prior FILE with it")
        NaturalPrior.load(args.prior, sha256=args.sha256)  # refused here if not the one published
    check_output_file(args.output)
    params = {"low_frequency_sigma": args.low_frequency_sigma, "shifts": args.shifts}
    if natural is None:
        params["prior"] = "builtin" if args.prior is None else str(args.prior)
    operator = new_operator(args, resolve_vae(args.vae, console), **params)
    operator.set_params(transport=transport_of(args, operator))
    # As transform does: a file that cannot be read is reported and the others go on.
    failed: list[tuple[Path, str]] = []

    def images_of(files: list[Path] | None, name: str) -> ImageSource | None:
        if files is None:
            return None
        return ImageSource(
            files,
            name=name,
            exif_orientation=args.exif_orientation,
            on_unreadable=lambda path, err: failed.append((path, failure_reason(err))),
        )

    operator.fit(images_of(restored, "--restored"), images_of(natural, "--natural"))
    operator.save(args.output)
    report_failures(console, failed)
    if natural is None:
        source = (
            f"the prior {args.prior}" if args.prior else f"the built-in prior of {operator.vae}"
        )
    else:
        source = f"{operator.n_images_natural_} natural images"
    console.result(
        f"wrote {args.output}: fitted on {operator.n_images_restored_} restored images and "
        f"{source} with {operator.vae}; latent W2 (p={operator.patch_size_}) between "
        f"them: {operator.w2_:.4g}"
        + (f"; {len(failed)} unreadable file(s) skipped" if failed else "")
    )
    return 1 if failed else 0
