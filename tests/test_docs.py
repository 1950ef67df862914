"""The documentation builds without a single warning, and says what the code does.

The build runs once per session (about 15 s) with ``-W``: any warning, from a page or from a
docstring rendered in the API reference, fails it.
"""

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="building the docs needs sphinx (the 'docs' extra)")
pytest.importorskip("numpydoc", reason="building the docs needs numpydoc (the 'docs' extra)")

from sphinx.cmd.build import build_main

from latent_ot.autoencoders import PRESETS

DOCS = Path(__file__).resolve().parents[1] / "docs"
PACKAGE = DOCS.parent / "latent_ot"


def _load_conf():
    spec = importlib.util.spec_from_file_location("latent_ot_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


@pytest.fixture(scope="module")
def conf():
    return _load_conf()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the HTML docs once; returns (exit status, output directory, warnings)."""
    root = tmp_path_factory.mktemp("docs")
    out, warnings = root / "html", root / "warnings.txt"
    status = build_main(
        ["-W", "--keep-going", "-b", "html", "-q", "-w", str(warnings), str(DOCS), str(out)]
    )
    text = warnings.read_text(encoding="utf-8") if warnings.exists() else ""
    return status, out, text


def _page(built, name: str) -> str:
    status, out, warnings = built
    assert status == 0, f"the docs build failed:\n{warnings}"
    return (out / name).read_text(encoding="utf-8")


def test_docs_build_without_warnings(built):
    status, _, warnings = built
    assert status == 0, f"the docs build failed or warned:\n{warnings}"
    assert warnings.strip() == ""


def test_api_reference_documents_the_estimators_and_their_methods(built):
    html = _page(built, "api.html")
    for anchor in (
        "latent_ot.LatentOTTransformer.fit",
        "latent_ot.LatentOTTransformer.partial_fit",
        "latent_ot.LatentOTTransformer.transform",
        "latent_ot.LatentOTTransformer.sweep",
        "latent_ot.GaussianOTTransformer.fit",
        "latent_ot.GaussianOTTransformer.transform",
        "latent_ot.GaussianStats",
    ):
        assert f'id="{anchor}"' in html, anchor
    # scikit-learn's generated metadata-routing setters are not this package's API
    assert "set_fit_request" not in html


def test_every_module_of_the_package_has_an_api_page(built):
    # The estimators are documented on the API page itself, under their public names.
    # Private modules (a leading underscore) are not API.
    modules = {path.stem for path in PACKAGE.glob("*.py") if not path.stem.startswith("_")}
    modules -= {"estimators"}
    for name in sorted(modules):
        page = DOCS / "api" / f"{name}.rst"
        assert page.is_file(), f"write {page} and list it in the toctree of docs/api.rst"
        html = _page(built, f"api/{name}.html")
        assert f'id="module-latent_ot.{name}"' in html, name


def test_method_page_has_the_transport_formulas(built):
    html = _page(built, "method.html")
    assert (
        r"T = \Sigma_s^{-1/2} (\Sigma_s^{1/2} \Sigma_t \Sigma_s^{1/2})^{1/2} \Sigma_s^{-1/2}"
        in html
    )
    assert r"\operatorname{map}(v) = \mu_t + T \, (v - \mu_s)" in html
    assert r"T = A \, M \, A^{+} \, \Sigma_s^{+}" in html  # the stochastic fallback
    assert r"x_\alpha = (1 - \alpha) \, \hat x_0 + \alpha \, x^*" in html
    assert "Freirich" in html and "Adrai" in html


def test_cli_page_shows_every_command_and_preset(built):
    html = _page(built, "cli.html")
    for command in ("fit", "transform", "sweep", "evaluate", "demo"):
        assert f"usage: latent-ot {command}" in html, command
    for name, preset in PRESETS.items():
        assert name in html
        source = "bundled with the package" if preset.bundled else preset.hub_id
        assert (source or "local copy only") in html, name
    assert "LATENT_OT_MODELS_DIR" in html


def test_choosing_page_table_agrees_with_the_presets():
    text = (DOCS / "choosing.rst").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        names = re.findall(r"``([\w.-]+)``", line)
        cells = line.split()
        if names and len(cells) >= 5 and all(cell.isdigit() for cell in cells[-5:]):
            channels, factor, *dims = map(int, cells[-5:])
            assert dims == [channels * p * p for p in (1, 3, 5)], line
            rows.update(dict.fromkeys(names, (channels, factor)))
    for name, preset in PRESETS.items():
        assert rows.get(name) == (preset.latent_channels, preset.factor), name


def test_gallery_shows_each_figure_followed_by_its_curve(conf, tmp_path):
    for name in ("jpeg", "denoising_curve", "zebra", "denoising", "orphan_curve"):
        (tmp_path / f"{name}.png").write_bytes(b"")
    targets = [
        line.removeprefix(".. figure:: /_static/gallery/")
        for line in conf.gallery_figures(tmp_path)
        if line.startswith(".. figure::")
    ]
    assert targets == ["denoising.png", "denoising_curve.png", "jpeg.png", "zebra.png"]
    assert conf.gallery_figures(tmp_path / "nothing-here") == []


def test_gallery_page_shows_the_figures_present(built):
    html = _page(built, "gallery.html")
    stems = {path.stem for path in (DOCS / "_static" / "gallery").glob("*.png")}
    shown = {stem for stem in stems if stem.removesuffix("_curve") in stems}
    for stem in shown:
        assert f"_images/{stem}.png" in html, stem
    if not shown:
        assert "No figure has been generated" in html
