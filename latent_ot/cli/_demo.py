"""``latent-ot demo``: the method start to end on sample photos, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .._optional import require
from ..apps.demo_data import DEMO_PHOTOS, sample_photos
from ..apps.reports import collage
from ..apps.restoration import degrade_and_restore, denoising, to_uint8
from ..autoencoders import load_autoencoder
from ..devices import resolve_device
from ..images.folders import expand_inputs, save_image_atomically
from ._console import Console
from ._models import DEFAULT_VAE, PAPER_VAE, new_operator, resolve_vae
from ._options import (
    OPERATOR_SUFFIX,
    add_sweep_options,
    command,
    integer,
    real,
)
from ._report import Metrics, autoencoder_for_metrics, measure_and_report

__all__ = ["add_parser", "run"]

_MIN_IMAGES = 4  # two to fit on, two to transform (FID-like metrics need two)
_DEFAULT_IMAGES = len(DEMO_PHOTOS)
_DEFAULT_SIZE = 192
# What the demo needs beyond the core install, checked before any work: (module, package).
_DEMO_PACKAGES = (
    ("skimage", "scikit-image"),
    ("matplotlib", "matplotlib"),
    ("torchmetrics", "torchmetrics"),
)


def add_parser(commands) -> None:
    parser = command(
        commands,
        "demo",
        summary="run the whole method on sample photos (offline)",
        description=(
            "Run the method start to end on photos that ship with scikit-image: add Gaussian "
            "noise, denoise with non-local means (the 'restoration'), fit an operator on the "
            "restored versions of every other photo with the autoencoder's built-in prior "
            "(no clean photo is used), transport the other half, and measure and plot the "
            f"perception-distortion trade-off over alpha. With the default autoencoder, "
            f"{DEFAULT_VAE} (bundled), it runs offline in about a minute on two CPU cores."
        ),
        notes=(
            "Writes to the output directory: collage.png (degraded / restored / transported / "
            "clean), curve.png, metrics.csv, metrics.md, operator.safetensors and the images."
        ),
        examples=[
            "latent-ot demo",
            "latent-ot demo --natural ~/photos/ -o demo/",
            f"latent-ot demo --vae {PAPER_VAE} --natural ~/photos/   # the paper's autoencoder",
        ],
        run=run,
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
        "--natural",
        nargs="+",
        metavar="IMAGES",
        help="fit on these natural images (files, directories, globs) instead of the built-in "
        "prior; never the clean versions of the restored photos, which would make it paired",
    )
    _add_photo_options(parser)
    add_sweep_options(parser, seed=0, vae=DEFAULT_VAE, patch_size="auto")


# The sample photos are about 512 px: larger crops are upscaled, and cost memory, not detail.
_MAX_SIZE = 2048


def _add_photo_options(parser) -> None:
    parser.add_argument(
        "--images",
        type=integer("N", _MIN_IMAGES, len(DEMO_PHOTOS)),
        default=_DEFAULT_IMAGES,
        metavar="N",
        help=f"sample photos to use, {_MIN_IMAGES} to {len(DEMO_PHOTOS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=integer("PX", 32, _MAX_SIZE),
        default=_DEFAULT_SIZE,
        metavar="PX",
        help=f"side of the square crops the photos are resized to, 32 to {_MAX_SIZE} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=real("SIGMA", low=0),
        default=50.0,
        metavar="SIGMA",
        help="standard deviation of the noise, on the 0-255 scale (default: %(default)s)",
    )


def run(args, console: Console) -> int:
    for module, package in _DEMO_PACKAGES:
        require(module, extra="demo", purpose="the demo", package=package)
    vae = resolve_vae(args.vae, console)
    # Loaded first: an autoencoder that cannot be loaded stops the demo before any work.
    autoencoder = load_autoencoder(vae, device=resolve_device(args.device), dtype=args.dtype)
    natural = expand_inputs(args.natural) if args.natural is not None else None
    alphas = sorted({*args.alphas, 0.0, 1.0})  # the curve's two ends, marked on the plot
    clean = sample_photos(args.images, args.size)
    degraded, restored = (
        {name: to_uint8(image) for name, image in images.items()}
        for images in degrade_and_restore(
            denoising(args.noise / 255),
            clean,
            args.seed,
            progress=lambda pairs: console.progress(
                pairs, desc="degrading and restoring", unit="img"
            ),
        )
    )
    names = list(clean)
    # Every other photo: both halves hold the same kinds of picture (photos, microscopy, sky),
    # as the images an operator is fitted on and those it transforms should.
    fit_on, shown = names[0::2], names[1::2]
    natural_side = f"{len(natural)} natural images" if natural else f"the built-in prior of {vae}"
    console.note(
        f"fitting on {len(fit_on)} restored photos and {natural_side} (no clean photo); "
        f"transforming {len(shown)} others"
    )
    operator = new_operator(args, vae, **({} if natural else {"prior": "builtin"}))
    operator.fit([restored[name] for name in fit_on], natural)
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
    _write_images(rows_of_images, shown, output)

    metrics = Metrics(
        args.metrics,
        autoencoder=autoencoder_for_metrics(args.metrics, autoencoder, args),
        patch_size=operator.patch_size_,
        device=args.device,
        seed=args.seed,
        console=console,
    )
    measure_and_report(alphas, outputs, rows_of_images["clean"], metrics, output, console)
    console.result(f"collage: {output / 'collage.png'}")
    console.result(f"operator: {output / f'operator{OPERATOR_SUFFIX}'}")
    return 0


def _write_images(rows: dict[str, list[np.ndarray]], names: list[str], output: Path) -> None:
    """Each row of images in its folder of ``output``, and all of them in ``collage.png``."""
    for folder, images in rows.items():
        (output / folder).mkdir(exist_ok=True)
        for name, image in zip(names, images, strict=True):
            save_image_atomically(Image.fromarray(image), output / folder / f"{name}.png")
    save_image_atomically(collage(rows, names), output / "collage.png")
