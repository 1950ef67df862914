"""JPEG decompression: images saved at quality 10, decoded, then made natural.

The decoded JPEG is the "restored" image here: blocky, with ringing and flattened colour.
The latent transport, fitted on thirty decoded JPEGs and thirty unrelated clean images,
moves them towards the statistics of natural images, at some cost in PSNR.

Run from the repository root (two to five minutes on two CPU cores)::

    python examples/jpeg.py

It prints the perception-distortion table over alpha and writes ``jpeg.png`` (decoded JPEG
/ transported / clean; the decoded JPEG is both the degraded and the restored image) and
``jpeg_curve.png`` to ``examples/output/jpeg/``; ``--help`` lists the options.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from _restoration_demo import RestorationTask, run_example
from PIL import Image

QUALITY = 10


def jpeg_round_trip(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Encode at JPEG quality 10 in memory and decode (Pillow's libjpeg; no randomness)."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(buffer, "JPEG", quality=QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255


TASK = RestorationTask(
    name="jpeg",
    title=f"JPEG decompression (quality {QUALITY})",
    degraded_label=f"JPEG q = {QUALITY}",
    restored_label=f"decoded JPEG\n(q = {QUALITY})",
    degrade=jpeg_round_trip,
)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
