"""Denoising: Gaussian noise of sigma 50 removed by non-local means, then made natural.

The paper's NLM row (Adrai et al. 2023, Table 1). Non-local means gives smooth, waxy
images; the latent transport, fitted on thirty of its outputs and thirty unrelated clean
images, brings back the statistics of natural textures, at some cost in PSNR.

Run from the repository root::

    python examples/denoising.py

It prints the perception-distortion table over alpha, on crops of the test split (Set5 and
``wikipedia-photos`` 043 to 049), and writes ``denoising.png`` (noisy / non-local means /
transported at the default alpha and at alpha 0 / clean) and ``denoising_curve.png`` to
``examples/output/denoising/``; ``--help`` lists the options.
"""

from __future__ import annotations

from collections.abc import Sequence

from _restoration_demo import run_example

from latent_ot.apps.restoration import TASKS

TASK = TASKS["denoising"]


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
