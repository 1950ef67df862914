"""``python -m latent_ot``: the ``latent-ot`` command (see :mod:`latent_ot.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
