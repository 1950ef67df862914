"""Build the built-in natural prior of the bundled TAEF2 autoencoder, and measure it by size.

Run from the repository root, with ``../shared`` beside it (or ``--shared PATH``)::

    python scripts/build_prior.py            # writes latent_ot/priors/taef2.safetensors
    python scripts/build_prior.py --measure  # also the prior-vs-size table (docs/priors.rst)
    python scripts/build_prior.py --stamp-fingerprint  # record the weights' fingerprint only

``--stamp-fingerprint`` rewrites the metadata of the existing prior with the fingerprint of
the bundled weights (``Autoencoder.fingerprint``), which every prior file records; its
statistics are kept bit for bit (float32 values survive the float64 round trip exactly).

The prior is built from natural photos only: ``wikipedia-photos`` 001 to 035 at every scale
but 2048 px (001 to 012 there), and CBSD68 (481 x 321 px) at the scales that do not enlarge
it. ``wikipedia-photos`` 036 to 049 and Set14 stay out: they are the held-out images of the
measurement below and of the quality benchmark. Only statistics are written; no image goes
into the package.

The measurement: held-out photos (036 to 043) resized to each scale, the latent W2 distance
between their patch statistics and each scale of the prior. A prior serves a size well where its
distance is near the one of the prior built at that same size (the diagonal).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from types import MappingProxyType

import torch

from latent_ot.autoencoders import load_autoencoder
from latent_ot.gaussian import w2_distance
from latent_ot.priors import NaturalPrior, build_prior

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "latent_ot" / "priors" / "taef2.safetensors"
SCALES = (256, 512, 1024, 2048)
PATCH_SIZES = (1, 2, 3)
CBSD68_UP_TO = 512  # CBSD68 is 481 px wide: larger scales would only enlarge it
# At 2048 px a photo gives ~44,000 latent patches: a dozen photos estimate the 288-d covariance
# well, and enlarging all 35 would triple the build's time.
PHOTOS_AT_2048 = 12
HELD_OUT = (36, 43)  # 8 of the 14 held-out photos: at 2048 px each costs as much as 40 at 256
MEASURED_PATCH_SIZE = 3


def photos(shared: Path, first: int, last: int) -> list[Path]:
    folder = shared / "images" / "wikipedia-photos"
    chosen = [p for p in sorted(folder.glob("*.png")) if first <= int(p.stem[:3]) <= last]
    if len(chosen) != last - first + 1:
        raise SystemExit(f"expected photos {first:03d}-{last:03d} in {folder}")
    return chosen


def build(shared: Path, autoencoder, batch_size: int) -> NaturalPrior:
    training = photos(shared, 1, 35)
    cbsd68 = sorted((shared / "images" / "CBSD68").glob("*.png"))
    stats, sides, counts = {}, {}, {}
    for scale in SCALES:
        started = time.perf_counter()
        images = training[:PHOTOS_AT_2048] if scale >= 2048 else training
        images = images + (cbsd68 if scale <= CBSD68_UP_TO else [])
        part = build_prior(
            [str(p) for p in images],
            autoencoder,
            scales=[scale],
            patch_sizes=PATCH_SIZES,
            batch_size=batch_size,
        )
        stats |= dict(part.stats)
        sides |= dict(part.sides)
        counts |= dict(part.n_images)
        print(
            f"scale {scale}: {part.n_images[scale]} photos, {time.perf_counter() - started:.0f} s"
        )
    return NaturalPrior(
        autoencoder=autoencoder.name.split(" (")[0],
        latent_channels=autoencoder.latent_channels,
        factor=autoencoder.factor,
        stats=MappingProxyType(stats),
        sides=MappingProxyType(sides),
        n_images=MappingProxyType(counts),
        description=(
            "wikipedia-photos 001-035 (Zelex/images) at every scale, CBSD68 at scales up to "
            f"{CBSD68_UP_TO} px; built by scripts/build_prior.py"
        ),
        fingerprint=autoencoder.fingerprint(),
    )


def measure(shared: Path, autoencoder, prior: NaturalPrior, batch_size: int) -> str:
    held_out = [str(p) for p in photos(shared, *HELD_OUT)]
    p = MEASURED_PATCH_SIZE
    test = build_prior(held_out, autoencoder, scales=SCALES, patch_sizes=[p], batch_size=batch_size)
    header = "| held-out size | " + " | ".join(f"prior {s} px" for s in SCALES) + " | picked |"
    lines = [header, "|" + "---|" * (len(SCALES) + 2)]
    for size in SCALES:
        target = test.stats[(size, p)]
        cells = []
        for scale in SCALES:
            source = prior.stats[(scale, p)]
            distance = w2_distance(target.mean, target.covariance, source.mean, source.covariance)
            cells.append(f"{float(distance):.3f}")
        picked = prior.nearest_scale(test.sides[size])
        lines.append(f"| {size} px | " + " | ".join(cells) + f" | {picked} px |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--measure", action="store_true", help="also print the size table")
    parser.add_argument("--measure-only", action="store_true", help="measure the prior at --output")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--stamp-fingerprint", action="store_true", help="record the weights' fingerprint only"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    autoencoder = load_autoencoder("taef2", dtype=None)
    if args.stamp_fingerprint:
        prior = NaturalPrior.load(args.output)
        stamped = dataclasses.replace(prior, fingerprint=autoencoder.fingerprint())
        stamped.save(args.output, dtype=torch.float32)
        print(f"wrote {args.output} with fingerprint {stamped.fingerprint}")
        return
    if args.measure_only:
        prior = NaturalPrior.load(args.output)
    else:
        prior = build(args.shared, autoencoder, args.batch_size)
        prior.save(args.output, dtype=torch.float32)  # half the file; see NaturalPrior.save
        print(f"wrote {args.output}")
    if args.measure or args.measure_only:
        print(measure(args.shared, autoencoder, prior, args.batch_size))


if __name__ == "__main__":
    main()
