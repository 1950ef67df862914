"""What evaluating a sweep costs next to the sweep itself, and its peak memory.

Six photos of about 1 Mpx (``shared/images/wikipedia-photos``, read where they lie; without
``shared/``, scikit-image's sample photos upscaled to that size) are degraded (4x bicubic
downsampling) and restored (bicubic upsampling). A TAEF2 operator fitted on the restored
images and the built-in prior transports them at 5 alphas (``sweep``); the outputs are then
measured against the clean photos as ``latent-ot sweep --reference`` does: PSNR, SSIM and
latent W2 at the operator's patch size, the references measured once
(`latent_ot.metrics.Evaluator`). Prints the transport time, the metrics time, their ratio,
and the peak resident memory of a fresh child process (``ru_maxrss``) after the transport
and at the end, which tells whether measuring raised it.

Run: ``python benchmarks/evaluation.py --threads 1`` (``--threads``: torch's CPU threads, by
default its own choice).
"""

from __future__ import annotations

import argparse
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


def child(threads: int | None) -> None:
    """Fit, sweep and measure; prints the timings."""
    import torch

    from latent_ot import LatentOTTransformer
    from latent_ot.metrics import Evaluator

    if threads:
        torch.set_num_threads(threads)

    clean = clean_photos()
    inputs = [restored(photo) for photo in clean]
    operator = LatentOTTransformer(vae="taef2", device="cpu").fit(inputs)
    start = time.perf_counter()
    outputs = operator.sweep(inputs, ALPHAS)
    transport = time.perf_counter() - start
    peak_transport = peak_gb()

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
    print(
        f"peak resident memory after fit and sweep: {peak_transport:.2f} GB, at the end: ", end=""
    )
    print(f"{peak_gb():.2f} GB (GB = 1e9 bytes)")


def peak_gb() -> float:
    """This process's peak resident memory so far, in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.threads)
        return
    threads = ["--threads", str(args.threads)] if args.threads else []
    subprocess.run([sys.executable, __file__, "--child", *threads], check=True)


if __name__ == "__main__":
    main()
