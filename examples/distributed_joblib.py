"""Fit one operator per partition of the images in parallel, merge them, and get the full fit.

Run from the repository root::

    python examples/distributed_joblib.py

Each of ``--partitions`` jobs fits a :class:`~latent_ot.LatentOTTransformer` on its own images
in a separate process (``joblib.Parallel``); the driver adds the fitted operators up (``a +
b`` merges their statistics exactly) and compares the result with one fit on all the images.
The statistics agree to the last digits (about 1e-16); the transport matrix to those digits
times the conditioning of the restored images' covariance, which blurry images make large.
Dask, Ray and Spark work the same way: fit per partition, merge on the driver (see
``docs/distributed.rst``).

The images are crops of ``images/CBSD68`` in the shared folder beside the repository
(``--shared``); the "restored" ones are blurred by a down- and up-scaling, standing in for the
outputs of a restoration model. The autoencoder is TAEF2, the pretrained one bundled with the
package (``--vae``: any other that ``load_autoencoder`` accepts, ``pixel`` for the identity).
"""

import argparse
import functools
import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from PIL import Image

from latent_ot import LatentOTTransformer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_crops(folder: Path, count: int, size: int) -> list[np.ndarray]:
    """Centre crops of ``size`` pixels of the first ``count`` images, as float arrays."""
    crops = []
    for path in sorted(folder.glob("*.png"))[:count]:
        image = Image.open(path).convert("RGB")
        left, top = (image.width - size) // 2, (image.height - size) // 2
        crop = image.crop((left, top, left + size, top + size))
        crops.append(np.asarray(crop, dtype=np.float64) / 255.0)
    return crops


def blurred(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """A stand-in for a restoration model's output: detail lost by down- and up-scaling."""
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    small = pil.resize((pil.width // factor, pil.height // factor), Image.Resampling.BICUBIC)
    return np.asarray(small.resize(pil.size, Image.Resampling.BICUBIC), dtype=np.float64) / 255.0


def fit_partition(vae: str, restored: list, natural: list) -> LatentOTTransformer:
    """What each worker runs: an ordinary fit on its partition.

    One image per batch and one thread, here only to show that the merge itself is exact:
    then the float32 encoder computes each latent the same way in every process, and its
    rounding (about 1e-7 relative) does not show through.
    """
    torch.set_num_threads(1)
    dot = LatentOTTransformer(vae=vae, device="cpu", batch_size=1, random_state=0)
    return dot.fit(restored, natural)


def relative_differences(merged: LatentOTTransformer, whole: LatentOTTransformer) -> tuple:
    """Largest relative difference of the two operators' statistics, and of their maps."""
    pairs = [
        (merged.restored_stats_.mean, whole.restored_stats_.mean),
        (merged.restored_stats_.covariance, whole.restored_stats_.covariance),
        (merged.natural_stats_.mean, whole.natural_stats_.mean),
        (merged.natural_stats_.covariance, whole.natural_stats_.covariance),
    ]
    statistics = max(float((a - b).norm() / b.norm()) for a, b in pairs)
    a, b = merged.gaussian_ot_.transport_matrix_, whole.gaussian_ot_.transport_matrix_
    return statistics, float(np.linalg.norm(a - b) / np.linalg.norm(b))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument(
        "--vae",
        default="taef2",
        help="the autoencoder, by name or folder (default: the bundled TAEF2)",
    )
    parser.add_argument("--count", type=int, default=8, help="images of each kind")
    parser.add_argument("--size", type=int, default=96, help="crop size in pixels")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if not (args.shared / "images" / "CBSD68").is_dir():
        parser.error(f"--shared: {args.shared} holds no images/CBSD68; pass the shared folder")
    if not 1 <= args.partitions <= args.count:
        parser.error(f"--partitions must be in [1, --count={args.count}]; got {args.partitions}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the example; returns the relative differences it prints."""
    args = parse_args(argv)
    # Unpaired, as in the method: restored and natural images of different scenes.
    crops = load_crops(args.shared / "images" / "CBSD68", 2 * args.count, args.size)
    restored = [blurred(image) for image in crops[: args.count]]
    natural = crops[args.count :]
    print(f"{len(restored)} restored, {len(natural)} natural {args.size}px crops; vae={args.vae}")

    # Fit per partition, in parallel; merge on the driver.
    k, vae = args.partitions, args.vae
    parts = Parallel(n_jobs=args.n_jobs)(
        delayed(fit_partition)(vae, restored[i::k], natural[i::k]) for i in range(k)
    )
    merged = functools.reduce(operator.add, parts)
    whole = fit_partition(vae, restored, natural)

    statistics, matrix = relative_differences(merged, whole)
    outputs = merged.transform(restored[0]), whole.transform(restored[0])
    pixels = float(np.abs(outputs[0] - outputs[1]).max())
    print(f"{k} partitions fitted on {args.n_jobs} processes and merged; compared with one fit:")
    print(f"  statistics (means, covariances), relative difference: {statistics:.1e}")
    print(f"  transport matrix, relative difference:                {matrix:.1e}")
    print(f"  transported image, largest pixel difference:          {pixels:.1e}")
    return {"statistics": statistics, "transport_matrix": matrix, "pixels": pixels}


if __name__ == "__main__":
    main()
