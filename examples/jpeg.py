"""JPEG decompression: images saved at quality 10, decoded, then made natural.

The decoded JPEG is the "restored" image here: blocky, with ringing and flattened colour.
The latent transport, fitted on thirty decoded JPEGs and thirty unrelated clean images,
moves them towards the statistics of natural images, at some cost in PSNR.

Run from the repository root::

    python examples/jpeg.py

It prints the perception-distortion table over alpha, on crops of the test split (Set5 and
``wikipedia-photos`` 043 to 049), and writes ``jpeg.png`` (decoded JPEG / transported at the
default alpha and at alpha 0 / clean; the decoded JPEG is both the degraded and the restored
image) and ``jpeg_curve.png`` to ``examples/output/jpeg/``; ``--help`` lists the options.
"""

from __future__ import annotations

from collections.abc import Sequence

from _restoration_demo import run_example

from latent_ot.apps.restoration import TASKS

TASK = TASKS["jpeg"]


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
