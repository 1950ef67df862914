"""What the restoration examples share: data, fit, alpha sweep, metrics table and figures.

Each example (``denoising.py``, ``super_resolution.py``, ``jpeg.py``) names one task of
`latent_ot.apps.restoration` (a degradation and a classical restorer) and calls `run_example`,
which:

1. cuts center crops of CBSD68 images into two disjoint, unpaired training sets, as in the
   paper: ``--n-train`` images degraded and restored (the "restored" set) and ``--n-train``
   other images left clean (the "natural" set);
2. fits a `latent_ot.LatentOTTransformer` on them with TAEF2, the autoencoder bundled with
   the package; with ``--natural prior`` the natural set is left out and the transformer's
   built-in natural prior stands in for it;
3. degrades and restores crops of the test split (Set5 and ``wikipedia-photos`` 043 to 049,
   `latent_ot.apps.demo_data.split_names`: images on which nothing was chosen) and transports
   them for every alpha at once (`latent_ot.LatentOTTransformer.sweep` runs the autoencoder
   once per image);
4. prints the perception-distortion table: PSNR and SSIM against the clean images
   (distortion), and the latent W2 distance to the clean images (perception: patch FID
   needs an Inception network that cannot be downloaded offline; ``--patch-fid`` adds it);
5. writes ``<name>.png`` (degraded / restored / transported at the transformer's default
   alpha, what users get / transported at alpha 0, the paper's full transport / clean) and
   ``<name>_curve.png`` (the perception-distortion curve over alpha).

Why 30 training images a side where the paper uses 10: more patch vectors give better
estimates of both sides' statistics, so the map carries over less of what the particular
natural crops show. Why clean CBSD68 crops remain the default natural side: they are the
paper's setting, and the built-in prior (``--natural prior``) is there to show that no
natural image is needed at all.

This module is not an example itself; run one of the three scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from latent_ot import LatentOTTransformer
from latent_ot._optional import require
from latent_ot.apps.demo_data import split_names
from latent_ot.apps.reports import markdown_table, plot_perception_distortion
from latent_ot.apps.restoration import RestorationTask, degrade_and_restore
from latent_ot.autoencoders import Autoencoder, load_autoencoder
from latent_ot.cli import parse_alphas
from latent_ot.devices import resolve_device
from latent_ot.metrics import latent_w2, patch_fid, psnr, ssim
from latent_ot.priors import builtin_prior

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_SHARED = EXAMPLES.parent.parent / "shared"
# -1 to 2 in steps of 0.25, as the paper's perception-distortion curves.
DEFAULT_ALPHAS = tuple(-1.0 + 0.25 * step for step in range(13))
# The held-out images come from the test split (`split_names`); these go first, where the
# difference between a smooth restoration and a natural-looking one shows best: blossoming
# trees (fine texture), the butterfly (sharp rims and colour), a camouflage uniform with a
# stethoscope (texture and edges), a frozen waterfall. The rest follow in the split's order;
# images under --size (Set5's woman at 256 px) are left out.
TEXTURES_FIRST = (
    "wikipedia-photos/047",
    "Set5/butterfly",
    "wikipedia-photos/044",
    "wikipedia-photos/048",
)
VAE = "taef2"  # the autoencoder bundled with latent_ot: loads offline, has a built-in prior
PATCH_SIZE = 3  # latent patch side of the W2 measure (the paper's); the fit uses the defaults
FACTOR = 8  # TAEF2's downsampling: crops are multiples of it, so nothing is padded
SHOWN = 3  # held-out images in the collage
# Collage tiles: image centers at full resolution, where texture shows, small enough that
# the gallery's PNGs stay light.
DETAIL_PX = 120
GAP_PX = 3
LABELS_PX = 128  # room for the longest row label, "decoded JPEG (q 10)" at 8 pt
DPI = 100
# The natural side of the fit (--natural): clean CBSD68 crops, or the built-in prior.
NATURAL_CHOICES = ("cbsd68", "prior")


@dataclass
class DemoImages:
    """The crops of one run: ``size x size x 3`` float32 in [0, 1], but for ``degraded``,
    the measurements, which have their own size and range (noise is not clipped)."""

    train_restored: list[np.ndarray]
    train_natural: list[np.ndarray]
    names: list[str]
    clean: list[np.ndarray]
    degraded: list[np.ndarray]
    restored: list[np.ndarray]


# --------------------------------------------------------------------------- command line


def parse_args(task: RestorationTask, argv: Sequence[str] | None) -> argparse.Namespace:
    """Options of every restoration example; errors name the option at fault."""
    parser = argparse.ArgumentParser(
        prog=f"{task.name}.py",
        description=f"{task.title}, made photo-realistic by latent optimal transport; "
        "writes the collage and the perception-distortion curve.",
    )
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=EXAMPLES / "output" / task.name,
        help="where the figures go (created)",
    )
    parser.add_argument(
        "--n-train",
        type=int,
        default=30,
        help="CBSD68 images in each training set (restored, natural)",
    )
    parser.add_argument(
        "--natural",
        choices=NATURAL_CHOICES,
        default="cbsd68",
        help="the natural side of the fit: 'cbsd68', --n-train clean CBSD68 crops (the "
        "paper's setting), or 'prior', the built-in natural prior of the autoencoder",
    )
    parser.add_argument(
        "--held-out",
        type=int,
        default=4,
        help="test-split images (Set5, wikipedia-photos 043 to 049) transformed and measured",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=256,
        help="side of the center crops, a multiple of 8",
    )
    parser.add_argument(
        "--alphas",
        type=parse_alphas,
        default=DEFAULT_ALPHAS,
        help="alphas of the curve, START:STOP:STEP or comma-separated (write "
        "--alphas=-1,0,1 for negative values); 0, 1 and the default alpha are always added",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the training images' choice, the noise and the transport",
    )
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    parser.add_argument(
        "--patch-fid",
        action="store_true",
        help="also compute patch FID with the default Inception network (needs torch-fidelity "
        "and downloads its weights on first use)",
    )
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not (args.shared / "images" / "CBSD68").is_dir():
        parser.error(f"--shared: {args.shared} holds no images/CBSD68; pass the shared folder")
    if args.size < FACTOR or args.size % FACTOR:
        parser.error(f"--size must be a positive multiple of {FACTOR}, got {args.size}")
    available = len(_training_files(args.shared)) // 2
    if not 1 <= args.n_train <= available:
        parser.error(f"--n-train must be between 1 and {available}, got {args.n_train}")
    available = len(held_out_names(args.shared, args.size))
    if not 1 <= args.held_out <= available:
        parser.error(
            f"--held-out must be between 1 and {available} (images of at least --size "
            f"{args.size} px), got {args.held_out}"
        )
    if args.patch_fid and importlib.util.find_spec("torch_fidelity") is None:
        parser.error("--patch-fid needs torch-fidelity: pip install torch-fidelity")
    if args.natural == "prior":
        try:
            builtin_prior(VAE)
        except (OSError, ValueError) as error:
            parser.error(f"--natural prior: the built-in prior of {VAE} cannot be read: {error}")


# --------------------------------------------------------------------------- images


def read_crop(path: Path, size: int) -> np.ndarray:
    """The center ``size x size`` crop of an image file, RGB float32 in [0, 1]."""
    with Image.open(path) as image:
        width, height = image.size
        left, top = (width - size) // 2, (height - size) // 2
        crop = image.convert("RGB").crop((left, top, left + size, top + size))
    return np.asarray(crop, dtype=np.float32) / 255


def _training_files(shared: Path) -> list[Path]:
    return sorted((shared / "images" / "CBSD68").glob("*.png"))


def held_out_names(shared: Path, size: int) -> list[str]:
    """The test split's images of at least ``size`` px a side, `TEXTURES_FIRST` first."""
    test = split_names(shared / "images", "test")
    ordered = [*TEXTURES_FIRST, *(name for name in test if name not in TEXTURES_FIRST)]
    names = []
    for name in ordered:
        with Image.open(shared / "images" / f"{name}.png") as image:
            if min(image.size) >= size:
                names.append(name)
    return names


def prepare_images(
    task: RestorationTask,
    shared: Path,
    *,
    n_train: int,
    held_out: int,
    size: int,
    seed: int,
) -> DemoImages:
    """Training sets from CBSD68 and crops of the test split, degraded and restored.

    The same arguments give the same images: ``seed`` picks the training images and, with
    each image's name, seeds its degradation (`latent_ot.apps.restoration.image_rng`).
    """
    files = _training_files(shared)
    order = np.random.default_rng(seed).permutation(len(files))
    # Disjoint and unpaired: the natural set never shows the clean version of a restored one.
    to_restore = {f"CBSD68/{files[i].stem}": read_crop(files[i], size) for i in order[:n_train]}
    natural = [read_crop(files[i], size) for i in order[n_train : 2 * n_train]]
    names = held_out_names(shared, size)[:held_out]
    clean = {name: read_crop(shared / "images" / f"{name}.png", size) for name in names}
    _, train_restored = degrade_and_restore(task, to_restore, seed)
    degraded, restored = degrade_and_restore(task, clean, seed)
    return DemoImages(
        train_restored=list(train_restored.values()),
        train_natural=natural,
        names=names,
        clean=list(clean.values()),
        degraded=list(degraded.values()),
        restored=list(restored.values()),
    )


# --------------------------------------------------------------------------- metrics


def perception_distortion_table(
    outputs: dict[float, list[np.ndarray]],
    clean: list[np.ndarray],
    autoencoder: Autoencoder,
    *,
    with_patch_fid: bool = False,
) -> list[dict[str, float]]:
    """One row per alpha: PSNR and SSIM against ``clean``, latent W2 (and patch FID) to it.

    The latent W2 (`latent_ot.metrics.latent_w2`, patches of `PATCH_SIZE`) is the distance
    the transport closes, measured on images it was not fitted on.
    """
    rows = []
    for alpha, images in outputs.items():
        row = {
            "alpha": alpha,
            "psnr": psnr(images, clean),
            "ssim": ssim(images, clean),
            "latent_w2": latent_w2(images, clean, autoencoder, patch_size=PATCH_SIZE),
        }
        if with_patch_fid:
            row["patch_fid"] = patch_fid(images, clean, device=autoencoder.device)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- figures


def _display(image: np.ndarray, size: int) -> np.ndarray:
    """An image clipped to [0, 1] and, if smaller (a low-resolution measurement), enlarged
    to ``size`` by pixel repetition so that its pixels stay visible."""
    image = np.clip(image, 0, 1)
    if image.shape[0] == size:
        return image
    return np.repeat(np.repeat(image, size // image.shape[0], axis=0), size // image.shape[1], 1)


def _center(image: np.ndarray, tile: int) -> np.ndarray:
    top, left = (image.shape[0] - tile) // 2, (image.shape[1] - tile) // 2
    return image[top : top + tile, left : left + tile]


def _mosaic(tiles: list[list[np.ndarray]], gap: int) -> np.ndarray:
    """Equal square tiles in a grid on white, ``gap`` pixels apart."""
    tile = tiles[0][0].shape[0]
    rows, columns = len(tiles), len(tiles[0])
    mosaic = np.ones((rows * (tile + gap) - gap, columns * (tile + gap) - gap, 3), np.float32)
    for row, row_tiles in enumerate(tiles):
        for column, image in enumerate(row_tiles):
            top, left = row * (tile + gap), column * (tile + gap)
            mosaic[top : top + tile, left : left + tile] = image
    return mosaic


def _save_png(figure: Any, path: Path) -> None:
    """Save as an RGB PNG, a quarter lighter than matplotlib's RGBA: the gallery commits them."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    with Image.open(buffer) as rendered:
        rendered.convert("RGB").save(path, optimize=True)


def _pixel_exact_axes(height: int, width: int, *, left: int, top: int) -> tuple[Any, Any]:
    """A figure with axes of exactly ``height x width`` pixels, ``left`` and ``top`` pixels
    from its edges (room for labels), so that an image drawn in them is not resampled."""
    margin = 4
    figure_width, figure_height = width + left + margin, height + top + margin
    matplotlib = require("matplotlib.figure", extra="demo", purpose="the examples")
    figure = matplotlib.Figure(figsize=(figure_width / DPI, figure_height / DPI), dpi=DPI)
    box = (
        left / figure_width,
        margin / figure_height,
        width / figure_width,
        height / figure_height,
    )
    return figure, figure.add_axes(box)


def _collage_rows(
    task: RestorationTask, images: DemoImages, transported: dict[float, list[np.ndarray]]
) -> list[tuple[str, list[np.ndarray]]]:
    rows = [
        (f"{task.restored_label}\n($\\alpha$ = 1)", images.restored),
        *((f"transported\n($\\alpha$ = {alpha:g})", out) for alpha, out in transported.items()),
        ("clean", images.clean),
    ]
    if task.restore is not None:
        rows.insert(0, (task.degraded_label, images.degraded))
    return rows


def save_collage(
    task: RestorationTask,
    images: DemoImages,
    transported: dict[float, list[np.ndarray]],
    path: Path,
) -> None:
    """Rows degraded / restored / transported (one row per alpha of ``transported``, labelled
    with it) / clean, one column per held-out image.

    Each tile is the center of its image at full resolution, where texture shows, labelled
    with the PSNR of the whole image to the clean one.
    """
    rows = _collage_rows(task, images, transported)
    shown = min(SHOWN, len(images.clean))
    size = images.clean[0].shape[0]
    tile = min(size, DETAIL_PX)
    step = tile + GAP_PX  # from one tile to the next, in pixels
    tiles = [[_center(_display(im, size), tile) for im in row[:shown]] for _, row in rows]
    mosaic = _mosaic(tiles, GAP_PX)
    figure, ax = _pixel_exact_axes(*mosaic.shape[:2], left=LABELS_PX, top=64)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks(
        [tile / 2 + k * step for k in range(shown)],
        [n.split("/")[-1] for n in images.names[:shown]],
    )
    ax.set_yticks([tile / 2 + k * step for k in range(len(rows))], [label for label, _ in rows])
    ax.xaxis.tick_top()
    ax.tick_params(length=0, labelsize=8)
    ax.spines[:].set_visible(False)
    for row, (_, row_images) in enumerate(rows[:-1]):
        if row_images[0].shape != images.clean[0].shape:
            continue  # a low-resolution measurement: no PSNR to the clean image
        scores = psnr(np.clip(row_images[:shown], 0, 1), images.clean[:shown], reduction=None)
        for column, score in enumerate(scores):
            ax.text(
                column * step + 3,
                row * step + 3,
                f"{score:.1f} dB",
                fontsize=7,
                va="top",
                color="white",
                bbox={"facecolor": "black", "alpha": 0.5, "linewidth": 0, "pad": 1},
            )
    figure.suptitle(
        f"{task.title}, test split\ncenters at full resolution; PSNR of the whole {size} px crops",
        fontsize=8,
    )
    _save_png(figure, path)


# --------------------------------------------------------------------------- the example


def _natural_side(args: argparse.Namespace, transport: LatentOTTransformer) -> str:
    if args.natural == "cbsd68":
        return f"{args.n_train} clean CBSD68 crops"
    return f"the built-in prior of {VAE}, at scale {transport.prior_scale_} px"


def run_example(task: RestorationTask, argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run one restoration example from its command-line arguments.

    Returns
    -------
    list of dict
        The printed table: one row per alpha (increasing), with keys ``alpha``, ``psnr``,
        ``ssim``, ``latent_w2`` and, with ``--patch-fid``, ``patch_fid``.
    """
    args = parse_args(task, argv)
    images = prepare_images(
        task,
        args.shared,
        n_train=args.n_train,
        held_out=args.held_out,
        size=args.size,
        seed=args.seed,
    )
    device = resolve_device(args.device)
    autoencoder = load_autoencoder(VAE, device=device)
    natural = images.train_natural if args.natural == "cbsd68" else None
    transport = LatentOTTransformer(vae=autoencoder, device=device, random_state=args.seed)
    transport.fit(images.train_restored, natural)

    # The default alpha is what users get; alpha = 0 is the paper's full transport.
    alphas = sorted({*args.alphas, 0.0, transport.alpha, 1.0})
    outputs = dict(zip(alphas, transport.sweep(images.restored, alphas), strict=True))
    rows = perception_distortion_table(
        outputs, images.clean, autoencoder, with_patch_fid=args.patch_fid
    )
    print(f"{task.title}: {len(images.clean)} held-out images of {args.size} px")
    print(f"natural side of the fit: {_natural_side(args, transport)}")
    print(markdown_table(rows))

    args.output.mkdir(parents=True, exist_ok=True)
    collage, curve = args.output / f"{task.name}.png", args.output / f"{task.name}_curve.png"
    shown = {alpha: outputs[alpha] for alpha in (transport.alpha, 0.0)}
    save_collage(task, images, shown, collage)
    plot_perception_distortion(rows).save(curve)
    print(f"wrote {collage} and {curve}")
    return rows
