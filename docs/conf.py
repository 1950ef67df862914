"""Sphinx configuration of the latent-ot documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html``; ``tests/test_docs.py`` does
the same with ``-W`` (every warning is an error), so the build must stay warning-free.

Some content is made at build time, so that the build is clean whatever is on disk and the
pages never contradict the code:

- the gallery (:class:`GalleryDirective`) shows the figures present in ``_static/gallery/``;
- the table of autoencoder presets (:class:`PresetsDirective`) is made from
  ``latent_ot.autoencoders.PRESETS``;
- the options of each command (:class:`CommandHelpDirective`) are its ``--help``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

import latent_ot  # noqa: E402

project = "latent-ot"
author = "The latent-ot developers"
copyright = "the latent-ot developers"
release = latent_ot.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build"]
templates_path: list[str] = []
# Figures are copied by the `figure` directive itself; nothing else needs a static folder.
html_static_path: list[str] = []
html_theme = "alabaster"
html_title = f"latent-ot {release}"

# `name` in a docstring links to the object when Sphinx knows it, and is code otherwise.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections already give the types
autodoc_default_options = {"members": True, "show-inheritance": True}

# Methods are documented by autodoc's `members`; numpydoc's own member tables would repeat
# them and need autosummary stub pages.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# No network: intersphinx stays off, and unresolved references are left as plain code.
nitpicky = False
# A numpydoc References section is a reading list: its entries need not be cited in the text.
suppress_warnings = ["ref.citation"]

# -- the gallery ---------------------------------------------------------------------------------

GALLERY_DIR = DOCS / "_static" / "gallery"
GALLERY_ORDER = ("denoising", "super_resolution", "jpeg")
GALLERY_CAPTIONS = {
    "denoising": "Denoising.",
    "super_resolution": "Super-resolution.",
    "jpeg": "JPEG decompression.",
}


def gallery_figures(gallery_dir: Path = GALLERY_DIR) -> list[str]:
    """reStructuredText for every ``<name>.png`` in ``gallery_dir``, with its curve.

    ``<name>_curve.png`` goes right under ``<name>.png`` (a curve without its figure is left
    out). Known names come first, in :data:`GALLERY_ORDER`, then the others by name. Empty
    when there is no figure.
    """
    images = {path.stem: path for path in sorted(gallery_dir.glob("*.png"))}
    names = [name for name in images if not name.endswith("_curve")]
    names.sort(key=lambda name: (GALLERY_ORDER.index(name) if name in GALLERY_ORDER else 99, name))
    lines: list[str] = []
    for name in names:
        title = GALLERY_CAPTIONS.get(name, name.replace("_", " ").capitalize() + ".")
        lines += _figure(images[name], title)
        curve = images.get(f"{name}_curve")
        if curve is not None:
            lines += _figure(curve, f"{title} Perception-distortion curve over ``alpha``.")
    return lines


def _figure(path: Path, caption: str) -> list[str]:
    # A leading "/" makes the path relative to the documentation root, whichever page uses it.
    alt = caption.replace("``", "")
    return [
        f".. figure:: /_static/gallery/{path.name}",
        "   :width: 100%",
        f"   :alt: {alt}",
        "",
        f"   {caption}",
        "",
    ]


class GalleryDirective(Directive):
    """``.. latent-ot-gallery::`` expands to :func:`gallery_figures`, or to a note if none."""

    def run(self):
        lines = gallery_figures() or [
            ".. note::",
            "",
            "   No figure has been generated in this build: run the examples (see above).",
            "",
        ]
        self.state_machine.insert_input(lines, str(GALLERY_DIR))
        return []


# -- the table of autoencoder presets -------------------------------------------------------------


def _preset_source(preset) -> str:
    """Where a preset's weights come from, as the CLI page's table says it."""
    if preset.bundled:
        return "bundled with the package"
    return f"``{preset.hub_id}``" if preset.hub_id else "local copy only"


def presets_table() -> list[str]:
    """A reStructuredText list-table of :data:`latent_ot.autoencoders.PRESETS`."""
    from latent_ot.autoencoders import PRESETS

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 15 25 5 5 50",
        "",
        "   * - name",
        "     - where it comes from",
        "     - C",
        "     - f",
        "     - description",
    ]
    for name, preset in PRESETS.items():
        source = _preset_source(preset)
        lines += [
            f"   * - ``{name}``",
            f"     - {source}",
            f"     - {preset.latent_channels}",
            f"     - {preset.factor}",
            f"     - {preset.description}",
        ]
    return [*lines, ""]


class PresetsDirective(Directive):
    """``.. latent-ot-presets::`` expands to :func:`presets_table`, so it never goes stale."""

    def run(self):
        self.state_machine.insert_input(presets_table(), "latent_ot.autoencoders.PRESETS")
        return []


# -- the help of the command line ----------------------------------------------------------------


def command_help(command: str, width: int = 88) -> str:
    """What ``latent-ot COMMAND --help`` prints, wrapped at ``width`` columns."""
    from latent_ot.cli import main

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps at the terminal's width
    try:
        with contextlib.redirect_stdout(io.StringIO()) as text:
            main([command, "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return text.getvalue()


class CommandHelpDirective(Directive):
    """``.. latent-ot-help:: COMMAND`` shows :func:`command_help` as a literal block."""

    required_arguments = 1

    def run(self):
        text = command_help(self.arguments[0])
        return [nodes.literal_block(text, text, language="text")]


# -- hooks ---------------------------------------------------------------------------------------


def _skip_metadata_routing(app, what, name, obj, skip, options):
    # scikit-learn generates set_fit_request & co. on every estimator; their docstrings point
    # into scikit-learn's own documentation, and they are not part of this package's API.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _always_reread_generated_pages(app, env, added, changed, removed):
    # Figures, presets and options change without the pages' sources changing.
    return ["gallery", "cli"]


def setup(app):
    app.add_directive("latent-ot-gallery", GalleryDirective)
    app.add_directive("latent-ot-presets", PresetsDirective)
    app.add_directive("latent-ot-help", CommandHelpDirective)
    app.connect("env-get-outdated", _always_reread_generated_pages)
    app.connect("autodoc-skip-member", _skip_metadata_routing)
    return {"parallel_read_safe": True}
