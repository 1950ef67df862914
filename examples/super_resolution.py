"""4x super-resolution: bicubic upsampling of a bicubic-downscaled image, then made natural.

Bicubic interpolation is the simplest super-resolution "model": sharp edges come back
blurred and fine textures are gone. The latent transport, fitted on thirty bicubic outputs
and thirty unrelated clean images, restores natural-looking detail, at some cost in PSNR.

Run from the repository root::

    python examples/super_resolution.py

It prints the perception-distortion table over alpha, on crops of the test split (Set5 and
``wikipedia-photos`` 043 to 049), and writes ``super_resolution.png`` (low resolution /
bicubic / transported at the default alpha and at alpha 0 / clean) and
``super_resolution_curve.png`` to ``examples/output/super_resolution/``; ``--help`` lists the
options.
"""

from __future__ import annotations

from collections.abc import Sequence

from _restoration_demo import run_example

from latent_ot.apps.restoration import TASKS

TASK = TASKS["super_resolution"]


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the example; returns the table rows (see ``_restoration_demo.run_example``)."""
    return run_example(TASK, argv)


if __name__ == "__main__":
    main()
