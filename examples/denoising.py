"""Denoising: Gaussian noise of sigma 50 removed by non-local means, then made natural.

The paper's NLM row (Adrai et al. 2023, Table 1). Non-local means gives smooth, waxy
images; the latent transport, fitted on thirty of its outputs and thirty unrelated clean
images, brings back the statistics of natural textures, at some cost in PSNR.

Run from the repository root (two to five minutes on two CPU cores)::

    python examples/denoising.py

It prints the perception-distortion table over alpha and writes ``denoising.png`` (noisy /
non-local means / transported / clean) and ``denoising_curve.png`` to
``examples/output/denoising/``; ``--help`` lists the options.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from _restoration_demo import RestorationTask, run_example

from latent_ot import demo

SIGMA = 50 / 255  # noise standard deviation, pixels in [0, 1]


def add_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise, left unclipped as the denoiser's model assumes."""
    return clean + rng.normal(0.0, SIGMA, clean.shape).astype(np.float32)


def non_local_means(noisy: np.ndarray) -> np.ndarray:
    """Non-local means with the noise level known (no estimate needed)."""
    return demo.non_local_means(noisy, SIGMA).astype(np.float32)


TASK = RestorationTask(
    name="denoising",
    title="Denoising (Gaussian noise of std 50/255) by non-local means",
    degraded_label=r"noisy ($\sigma$ = 50)",
    restored_label="non-local means",
    degrade=add_noise,
    restore=non_local_means,
)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
