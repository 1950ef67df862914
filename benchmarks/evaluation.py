"""What evaluating a sweep costs next to the sweep itself, and its peak memory.

Six photos of about 1 Mpx (``shared/images/wikipedia-photos``, read where they lie; without
``shared/``, scikit-image's sample photos upscaled to that size) are degraded (4x bicubic
downsampling) and restored (bicubic upsampling). A TAEF2 operator fitted on the restored
images and the built-in prior transports them at 5 alphas (``sweep``); the outputs are then
measured against the clean photos as ``latent-ot sweep --reference`` does: PSNR, SSIM and
latent W2 at the operator's patch size, the references measured once
(`latent_ot.metrics.Evaluator`). Prints the transport time, the metrics time, their ratio,
and the peak resident memory of the process (``ru_maxrss`` of a fresh child process).

Run: ``python benchmarks/evaluation.py``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared/images/wikipedia-photos"
N_PHOTOS = 6
ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
MEGAPIXEL = 1_000_000
SCALE = 4  # of the degradation


def clean_photos():
    """Six RGB photos of about 1 Mpx."""
    from PIL import Image

    files = sorted(SHARED_PHOTOS.glob("*.png"))[:N_PHOTOS]
    if len(files) == N_PHOTOS:
        photos = [Image.open(path).convert("RGB") for path in files]
    else:
        from skimage import data

        samples = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")
        photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in samples]
    return [to_megapixel(photo) for photo in photos]


def to_megapixel(photo):
    """The photo resized to about 1 Mpx, its sides multiples of the degradation's scale."""
    from PIL import Image

    ratio = (MEGAPIXEL / (photo.width * photo.height)) ** 0.5
    width, height = (round(side * ratio / SCALE) * SCALE for side in photo.size)
    return photo.resize((width, height), Image.Resampling.BICUBIC)


def restored(photo):
    """Bicubic downsampling by SCALE, then bicubic upsampling back: a blurry restoration."""
    from PIL import Image

    small = photo.resize((photo.width // SCALE, photo.height // SCALE), Image.Resampling.BICUBIC)
    return small.resize(photo.size, Image.Resampling.BICUBIC)


def child() -> None:
    """Fit, sweep and measure; prints the timings."""
    from latent_ot import LatentOTTransformer
    from latent_ot.metrics import Evaluator

    clean = clean_photos()
    inputs = [restored(photo) for photo in clean]
    operator = LatentOTTransformer(vae="taef2", device="cpu").fit(inputs)
    start = time.perf_counter()
    outputs = operator.sweep(inputs, ALPHAS)
    transport = time.perf_counter() - start

    start = time.perf_counter()
    evaluator = Evaluator(
        clean,
        metrics=["psnr", "ssim", "latent_w2"],
        autoencoder=operator.vae,
        patch_size=operator.patch_size_,
        device="cpu",
    )
    rows = [evaluator(images) for images in outputs]
    metrics = time.perf_counter() - start
    for alpha, row in zip(ALPHAS, rows, strict=True):
        print(f"alpha {alpha:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    pixels = sum(photo.width * photo.height for photo in clean) / len(clean) / 1e6
    print(f"{len(clean)} photos of {pixels:.2f} Mpx, {len(ALPHAS)} alphas")
    print(f"transport (sweep): {transport:.1f} s")
    print(f"metrics (psnr, ssim, latent W2 p={operator.patch_size_}): {metrics:.1f} s")
    print(f"metrics / transport: {metrics / transport:.2f}")


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        child()
        return
    subprocess.run([sys.executable, __file__, "--child"], check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    print(f"peak resident memory: {peak:.2f} GB")


if __name__ == "__main__":
    main()
