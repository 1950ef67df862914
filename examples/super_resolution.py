"""4x super-resolution: bicubic upsampling of a bicubic-downscaled image, then made natural.

Bicubic interpolation is the simplest super-resolution "model": sharp edges come back
blurred and fine textures are gone. The latent transport, fitted on thirty bicubic outputs
and thirty unrelated clean images, restores natural-looking detail, at some cost in PSNR.

Run from the repository root (two to five minutes on two CPU cores)::

    python examples/super_resolution.py

It prints the perception-distortion table over alpha and writes ``super_resolution.png``
(low resolution / bicubic / transported / clean) and ``super_resolution_curve.png`` to
``examples/output/super_resolution/``; ``--help`` lists the options.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from _restoration_demo import RestorationTask, run_example
from PIL import Image

SCALE = 4


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float image in [0, 1] through 8-bit pixels, as image files are."""
    pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pixels.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255


def downscale(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The low-resolution measurement: bicubic downscaling by 4 (no randomness)."""
    height, width = clean.shape[:2]
    return _resize(clean, (width // SCALE, height // SCALE))


def bicubic_upscale(low_resolution: np.ndarray) -> np.ndarray:
    """The restorer: bicubic upscaling by 4."""
    height, width = low_resolution.shape[:2]
    return _resize(low_resolution, (width * SCALE, height * SCALE))


TASK = RestorationTask(
    name="super_resolution",
    title="4x super-resolution by bicubic interpolation",
    degraded_label="low resolution\n(1/4, enlarged)",
    restored_label="bicubic",
    degrade=downscale,
    restore=bicubic_upscale,
)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
