"""What evaluating a sweep costs next to the sweep itself, and its peak memory.

Six photos of about 1 Mpx (``shared/images/wikipedia-photos``, read where they lie; without
``shared/``, scikit-image's sample photos upscaled to that size) are degraded (4x bicubic
downsampling) and restored (bicubic upsampling), and written as PNG files with their clean
versions. A TAEF2 operator is fitted on the restored images with the built-in prior (in a
child process of its own). Then ``latent-ot sweep`` runs on the files at 5 alphas, as a user
runs it, in a fresh child process, with PSNR, SSIM and latent W2 at the operator's patch
size: the transport writes each alpha's images a batch at a time, then each alpha is measured
from its files, the references once and the inputs' latents taken from the transport. Prints
the time of the transport (encoding, mapping, decoding, writing) and of the metrics, their
ratio, and the peak resident memory (``ru_maxrss``) after the transport and at the end; then
``latent-ot evaluate`` of one alpha's folder in another fresh child, for the metrics' own peak.

Run: ``python benchmarks/evaluation.py --threads 1`` (``--threads``: torch's CPU threads, by
default its own choice).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
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


def write_data(folder: Path) -> tuple[Path, Path]:
    """``restored/`` and ``clean/`` PNG files of the photos under ``folder``."""
    restored_dir, clean_dir = folder / "restored", folder / "clean"
    restored_dir.mkdir()
    clean_dir.mkdir()
    for index, photo in enumerate(clean_photos()):
        photo.save(clean_dir / f"photo{index}.png")
        restored(photo).save(restored_dir / f"photo{index}.png")
    return restored_dir, clean_dir


def fit_child(folder: Path) -> None:
    """Fit the operator on the restored files and save it (its own process: its memory)."""
    from latent_ot import LatentOTTransformer

    operator = LatentOTTransformer(vae="taef2", device="cpu").fit(folder / "restored")
    operator.save(folder / "operator.safetensors")


def sweep_child(folder: Path) -> None:
    """``latent-ot sweep`` on the files, its transport and its metrics timed apart."""
    from latent_ot.cli import _sweep, main

    times: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def timed(name, function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            times[name] = time.perf_counter() - start
            peaks[name] = peak_gb()
            return result

        return run

    _sweep.write_sweep = timed("transport", _sweep.write_sweep)
    _sweep.measure_and_report = timed("metrics", _sweep.measure_and_report)
    alphas = ",".join(f"{alpha:g}" for alpha in ALPHAS)
    args = ["sweep", str(folder / "operator.safetensors"), str(folder / "restored")]
    args += ["--reference", str(folder / "clean"), "-o", str(folder / "sweep")]
    args += ["--alphas", alphas, "--metrics", "psnr,ssim,latent_w2", "--device", "cpu"]
    if main(args) != 0:
        raise SystemExit("latent-ot sweep failed")
    pixels = sum(photo.width * photo.height for photo in clean_photos()) / N_PHOTOS / 1e6
    print(f"{N_PHOTOS} photos of {pixels:.2f} Mpx, {len(ALPHAS)} alphas")
    print(f"transport (sweep, writing included): {times['transport']:.1f} s")
    print(f"metrics (psnr, ssim, latent W2): {times['metrics']:.1f} s")
    print(f"metrics / transport: {times['metrics'] / times['transport']:.2f}")
    print(
        f"peak resident memory after the transport: {peaks['transport']:.2f} GB, "
        f"at the end: {peaks['metrics']:.2f} GB (GB = 1e9 bytes)"
    )


def evaluate_child(folder: Path) -> None:
    """``latent-ot evaluate`` of the alpha = 0 folder with the operator's latent W2."""
    from latent_ot.cli import main

    args = ["evaluate", "--restored", str(folder / "sweep" / "alpha_0")]
    args += [
        "--reference",
        str(folder / "clean"),
        "--operator",
        str(folder / "operator.safetensors"),
    ]
    args += ["--metrics", "psnr,ssim,latent_w2", "--device", "cpu", "-q"]
    start = time.perf_counter()
    if main(args) != 0:
        raise SystemExit("latent-ot evaluate failed")
    print(
        f"evaluate of one alpha's {N_PHOTOS} images: {time.perf_counter() - start:.1f} s, ", end=""
    )
    print(f"peak resident memory {peak_gb():.2f} GB")


def peak_gb() -> float:
    """This process's peak resident memory so far, in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


CHILDREN = {"fit": fit_child, "sweep": sweep_child, "evaluate": evaluate_child}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own)")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        CHILDREN[args.child](args.folder)
        return
    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_data(folder)
        for name in CHILDREN:  # each in a fresh process, so that its peak memory is its own
            command = [sys.executable, __file__, "--child", name, "--folder", str(folder)]
            subprocess.run([*command, *threads], check=True)


if __name__ == "__main__":
    main()
