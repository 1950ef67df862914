"""The ``latent-ot`` command: round trips on temporary folders, failures file by file, exit
codes, one-line errors, the sweep's table and curve, the default autoencoder and the prior, the
offline demo, and skipped metrics noted once."""

import csv
import hashlib
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

import latent_ot.cli
from latent_ot import LatentOTTransformer
from latent_ot.autoencoders import MODELS_DIR_ENV
from latent_ot.cli import build_parser, main, resolve_vae
from latent_ot.exceptions import MetricSkippedWarning
from latent_ot.metrics import evaluate
from latent_ot.priors import NaturalPrior

REPO = Path(__file__).resolve().parents[1]


def smooth_image(rng, height: int, width: int, contrast: float = 1.0) -> np.ndarray:
    """A smooth-ish random RGB uint8 image."""
    base = rng.random((height, width, 3))
    smooth = (base + np.roll(base, 1, axis=0) + np.roll(base, 1, axis=1)) / 3
    return np.round(np.clip(0.5 + contrast * (smooth - 0.5), 0, 1) * 255).astype(np.uint8)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """restored/ (PNG, JPEG and a grayscale PNG of different sizes), natural/ and clean/."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for folder in ("restored", "natural", "clean"):
        (root / folder).mkdir()
    for name, (height, width) in {"a.png": (40, 48), "b.jpg": (36, 44), "c.png": (32, 32)}.items():
        clean = smooth_image(rng, height, width, contrast=1.5)
        restored = np.round(128 + 0.5 * (clean.astype(float) - 128)).astype(np.uint8)
        mode = "L" if name == "c.png" else "RGB"
        Image.fromarray(clean).convert(mode).save(root / "clean" / f"{Path(name).stem}.png")
        Image.fromarray(restored).convert(mode).save(root / "restored" / name, quality=95)
    for index in range(3):
        Image.fromarray(smooth_image(rng, 36, 36, 1.5)).save(root / "natural" / f"n{index}.png")
    return root


@pytest.fixture(scope="module")
def operator_file(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("operator") / "operator.safetensors"
    args = ["fit", "--restored", str(data / "restored"), "--natural", str(data / "natural")]
    assert main([*args, "-o", str(path), "--vae", "pixel", "--device", "cpu", "-q"]) == 0
    return path


def folder_of_six_with_two_broken(root: Path) -> Path:
    folder = root / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(4):
        Image.fromarray(smooth_image(rng, 24, 24)).save(folder / f"good{index}.png")
    (folder / "garbage.png").write_bytes(b"this is not an image")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(smooth_image(rng, 24, 24)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:40])
    return folder


# -- fit and transform ---------------------------------------------------------------------------


def check_outputs_mirror_inputs(inputs: Path, outputs: Path) -> None:
    assert sorted(p.name for p in outputs.iterdir()) == sorted(p.name for p in inputs.iterdir())
    for source in inputs.iterdir():
        with Image.open(source) as before, Image.open(outputs / source.name) as after:
            assert (after.format, after.size, after.mode) == (
                before.format,
                before.size,
                before.mode,
            )


def test_fit_then_transform_keeps_names_sizes_formats_and_moves_pixels(
    data, operator_file, tmp_path, capsys
):
    operator = LatentOTTransformer.load(operator_file)
    assert (operator.vae, operator.n_images_restored_, operator.n_images_natural_) == (
        "pixel",
        3,
        3,
    )
    before = file_hashes(data / "restored")
    out = tmp_path / "out"

    args = ["transform", str(operator_file), str(data / "restored"), "-o", str(out)]
    code = main([*args, "--alpha", "0.5", "--device", "cpu", "-q"])

    assert code == 0
    assert "3 image(s) written" in capsys.readouterr().out
    check_outputs_mirror_inputs(data / "restored", out)
    assert not np.array_equal(pixels(out / "a.png"), pixels(data / "restored" / "a.png"))
    assert file_hashes(data / "restored") == before


def test_fit_low_frequency_sigma_reaches_the_operator_and_none_turns_it_off(
    data, operator_file, tmp_path, capsys
):
    assert LatentOTTransformer.load(operator_file).low_frequency_sigma == 6.0  # the default
    fit = ["fit", "--restored", str(data / "restored"), "--natural", str(data / "natural")]
    fit += ["--vae", "pixel", "--device", "cpu", "-q"]
    for value, expected in (("none", None), ("1.5", 1.5)):
        path = tmp_path / f"{value}.safetensors"
        assert main([*fit, "-o", str(path), "--low-frequency-sigma", value]) == 0
        assert LatentOTTransformer.load(path).low_frequency_sigma == expected
    assert main([*fit, "-o", str(tmp_path / "bad.safetensors"), "--low-frequency-sigma", "-1"]) == 2
    assert "--low-frequency-sigma must be 'none' or a number > 0, got '-1'" in (
        capsys.readouterr().err
    )


def test_fit_map_settings_reach_the_operators_transport(data, operator_file, tmp_path, capsys):
    assert LatentOTTransformer.load(operator_file).transport is None  # the default: the recipe's
    fit = ["fit", "--restored", str(data / "restored"), "--natural", str(data / "natural")]
    fit += ["--vae", "pixel", "--device", "cpu", "-q"]
    path = tmp_path / "noisy.safetensors"
    assert main([*fit, "-o", str(path), "--noise-scale", "0.5"]) == 0
    # the other setting is the recipe's for the patch size ("auto": 3 for 3 channels)
    transport = LatentOTTransformer.load(path).transport
    assert (transport.noise_scale, transport.rtol) == (0.5, None)
    assert main([*fit, "-o", str(path), "--rtol", "0.1", "--patch-size", "1"]) == 0
    transport = LatentOTTransformer.load(path).transport
    assert (transport.noise_scale, transport.rtol) == (0.0, 0.1)
    assert main([*fit, "-o", str(tmp_path / "bad.safetensors"), "--noise-scale", "2"]) == 2
    assert "--noise-scale must be 'auto' or a number in [0, 1], got '2'" in (
        capsys.readouterr().err
    )


def test_alpha_1_gives_the_inputs_back(data, operator_file, tmp_path):
    out = tmp_path / "out"
    args = ["transform", str(operator_file), str(data / "restored" / "*.png"), "-o", str(out)]
    assert main([*args, "--alpha", "1", "-q"]) == 0
    for name in ("a.png", "c.png"):
        np.testing.assert_array_equal(pixels(out / name), pixels(data / "restored" / name))


def test_round_trip_through_a_diffusers_autoencoder_directory(data, tiny_models_dir, tmp_path):
    operator_path = tmp_path / "kl.safetensors"
    vae = str(tiny_models_dir / "sd-vae-ft-mse")
    fit = ["fit", "--restored", str(data / "restored"), "--natural", str(data / "natural")]
    assert main([*fit, "-o", str(operator_path), "--vae", vae, "--device", "cpu", "-q"]) == 0
    assert LatentOTTransformer.load(operator_path).latent_channels_ == 4

    out = tmp_path / "out"
    args = ["transform", str(operator_path), str(data / "restored"), "-o", str(out), "-q"]
    assert main([*args, "--alpha", "0.5", "--device", "cpu"]) == 0
    check_outputs_mirror_inputs(data / "restored", out)


def test_broken_files_are_reported_one_by_one_and_the_others_written(
    operator_file, tmp_path, capsys
):
    folder = folder_of_six_with_two_broken(tmp_path)
    before = file_hashes(folder)
    out = tmp_path / "out"

    code = main(["transform", str(operator_file), str(folder), "-o", str(out), "-q"])

    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"good{i}.png" for i in range(4)]
    errors = [line for line in captured.err.splitlines() if line.startswith("latent-ot: error:")]
    assert len(errors) == 2
    for name, line in zip(("garbage.png", "truncated.jpg"), errors, strict=True):
        assert str(folder / name) in line
        assert len(line.split(f"{name}: ", 1)[1]) > 10  # a reason follows the name
    assert "4 image(s) written" in captured.out and "2 failed" in captured.out
    assert file_hashes(folder) == before


def test_an_autoencoder_that_does_not_fit_the_operator_stops_the_run_once(
    data, operator_file, tiny_models_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["transform", str(operator_file), str(data / "restored"), "-o", str(out), "-q"]

    code = main([*args, "--vae", str(tiny_models_dir / "sd-vae-ft-mse")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "channels" in err[0]  # once, not once per file
    assert list(out.iterdir()) == []


def test_output_folder_that_would_overwrite_inputs_is_refused(data, operator_file, capsys):
    before = file_hashes(data / "restored")
    folder = str(data / "restored")

    code = main(["transform", str(operator_file), folder, "-o", folder, "-q"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "would overwrite an input" in err[0]
    assert file_hashes(data / "restored") == before


def test_skip_existing_leaves_existing_outputs_alone(data, operator_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.jpg").write_bytes(b"already here")
    args = ["transform", str(operator_file), str(data / "restored"), "-o", str(out), "-q"]

    assert main([*args, "--skip-existing"]) == 0

    assert (out / "b.jpg").read_bytes() == b"already here"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "c.png"]
    summary = capsys.readouterr().out
    assert "2 image(s) written" in summary and "1 skipped" in summary


@pytest.mark.parametrize("how", ["explicit", "auto"])
def test_shard_processes_its_share_of_the_files(how, data, operator_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    shard = "1/2" if how == "explicit" else "auto"
    args = ["transform", str(operator_file), str(data / "restored"), "-o", str(out), "-q"]

    assert main([*args, "--shard", shard]) == 0

    # Files sorted by name: a.png, b.jpg, c.png; rank 1 of 2 takes the second.
    assert [p.name for p in out.iterdir()] == ["b.jpg"]


def test_shard_auto_without_torchrun_variables_is_a_usage_error(
    data, operator_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["transform", str(operator_file), str(data / "restored"), "-o", str(tmp_path / "o")]
    assert main([*args, "--shard", "auto"]) == 2
    assert "RANK and WORLD_SIZE" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- sweep and evaluate --------------------------------------------------------------------------


def test_sweep_writes_images_table_and_curve_and_alpha_1_is_the_input(
    data, operator_file, tmp_path, capsys
):
    out = tmp_path / "sweep"
    metrics = ["psnr", "ssim", "latent_w2"]
    args = ["sweep", str(operator_file), str(data / "restored"), "--reference", str(data / "clean")]
    # A range starting with a minus sign, as the help shows it.
    args += ["-o", str(out), "--alphas", "-0.5:1:0.5", "--metrics", ",".join(metrics), "-q"]

    assert main(args) == 0

    alphas = [-0.5, 0.0, 0.5, 1.0]
    for alpha in alphas:
        check_outputs_mirror_inputs(data / "restored", out / f"alpha_{alpha:g}")
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["alpha"]) for row in rows] == alphas
    # The latent W2 says its patch size: the operator's (3 here), as every command reports it.
    columns = ["psnr", "ssim", "latent_w2 (p=3)"]
    assert list(rows[0]) == ["alpha", *columns]
    markdown = (out / "metrics.md").read_text()
    assert markdown.startswith("| alpha |") and markdown in capsys.readouterr().out + "\n"
    with Image.open(out / "curve.png") as curve:
        assert curve.format == "PNG" and min(curve.size) > 200

    # The curve's alpha = 1 point is the restored images' own metrics, computed directly.
    restored = sorted((data / "restored").iterdir())
    clean = [data / "clean" / f"{path.stem}.png" for path in restored]
    direct = evaluate(restored, clean, metrics=metrics, autoencoder="pixel", patch_size=3)
    for name, column in zip(metrics, columns, strict=True):
        assert float(rows[-1][column]) == pytest.approx(direct[name], rel=1e-12)
    assert float(rows[1][columns[2]]) < float(rows[-1][columns[2]])  # alpha 0 is closer


def test_sweep_measures_what_it_wrote_and_encodes_the_inputs_once(
    data, operator_file, tmp_path, monkeypatch
):
    from latent_ot.autoencoders import PixelAutoencoder

    encoded = []
    encode = PixelAutoencoder.encode

    def counted(self, pixels, generator=None):
        encoded.append(len(pixels))
        return encode(self, pixels, generator)

    monkeypatch.setattr(PixelAutoencoder, "encode", counted)
    out, metrics = tmp_path / "sweep", ["psnr", "latent_w2"]
    args = ["sweep", str(operator_file), str(data / "restored"), "--reference", str(data / "clean")]
    args += ["-o", str(out), "--alphas", "0,0.5,1", "--metrics", ",".join(metrics), "-q"]

    assert main(args) == 0

    # 3 inputs transported, 3 references, and the outputs of the two alphas other than 1:
    # the inputs' (alpha = 1) latents come from the transport, not a second encoding.
    assert sum(encoded) == 3 + 3 + 2 * 3
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    # Every row is what evaluate gives for the images the sweep wrote (or, at 1, its inputs).
    clean = [data / "clean" / f"{stem}.png" for stem in ("a", "b", "c")]
    for row, folder in zip(rows, ("alpha_0", "alpha_0.5", None), strict=True):
        images = sorted((out / folder if folder else data / "restored").iterdir())
        direct = evaluate(images, clean, metrics=metrics, autoencoder="pixel", patch_size=3)
        assert float(row["psnr"]) == pytest.approx(direct["psnr"], rel=1e-12)
        assert float(row["latent_w2 (p=3)"]) == pytest.approx(direct["latent_w2"], rel=1e-9)


def test_sweeps_measuring_bar_counts_every_row_also_one_read_from_known_statistics(
    data, operator_file, tmp_path, capsys
):
    args = ["sweep", str(operator_file), str(data / "restored"), "--reference", str(data / "clean")]
    args += ["-o", str(tmp_path / "sweep"), "--alphas", "0,0.5,1", "--metrics", "latent_w2"]

    assert main(args) == 0

    # 3 alphas x 3 images; the alpha = 1 row reads no image (its statistics are known).
    lines = re.split(r"[\r\n]", capsys.readouterr().err)
    measuring = [line for line in lines if "measuring" in line]
    assert measuring and "9/9" in measuring[-1]


def test_evaluate_prints_the_table(data, tmp_path, capsys):
    restored, clean = str(data / "restored"), str(data / "clean")
    table = tmp_path / "table.csv"
    args = ["evaluate", "--restored", restored, "--reference", clean, "--csv", str(table)]

    assert main([*args, "--metrics", "psnr,ssim", "-q"]) == 0

    out = capsys.readouterr().out
    direct = evaluate(
        sorted((data / "restored").iterdir()),
        [data / "clean" / name for name in ("a.png", "b.png", "c.png")],
        metrics=["psnr", "ssim"],
    )
    assert out.splitlines()[0].split() == ["|", "images", "|", "psnr", "|", "ssim", "|"]
    assert f"{direct['psnr']:.2f}" in out and f"{direct['ssim']:.4f}" in out
    with open(table, newline="") as file:
        (row,) = csv.DictReader(file)
    assert float(row["psnr"]) == pytest.approx(direct["psnr"], rel=1e-12)


def test_references_are_matched_by_name(data, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes((data / "clean" / "a.png").read_bytes())
    args = ["evaluate", "--restored", str(tmp_path / "x.png"), "--reference", str(data / "clean")]
    assert main([*args, "--metrics", "psnr"]) == 1
    assert "no reference image for x.png" in capsys.readouterr().err


# -- the default autoencoder, the prior, the demo ---------------------------------------------


def test_the_default_autoencoder_is_the_bundled_taef2_for_every_command_that_picks_one():
    parser = build_parser()
    commands = {
        "fit": ["fit", "--restored", "r/", "-o", "op.safetensors"],
        "demo": ["demo"],
        "evaluate": ["evaluate", "--restored", "r/", "--reference", "c/"],
        "prior": ["prior", "photos/", "-o", "prior.safetensors"],
    }
    for argv in commands.values():
        assert parser.parse_args(argv).vae == "taef2"
    # transform and sweep use the operator's own autoencoder unless told otherwise.
    assert parser.parse_args(["transform", "op", "x", "-o", "y"]).vae is None
    # "auto", the default of earlier versions, now names the default: nothing is guessed.
    assert resolve_vae("auto") == "taef2"
    assert resolve_vae("sd-vae-ft-mse") == "sd-vae-ft-mse"


def test_an_autoencoder_that_cannot_be_loaded_is_a_one_line_error_naming_where_it_looked(
    data, tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv(MODELS_DIR_ENV, str(empty))
    operator = tmp_path / "op.safetensors"
    args = ["fit", "--restored", str(data / "restored"), "--natural", str(data / "natural")]

    code = main([*args, "-o", str(operator), "--vae", "taesd", "--device", "cpu", "-q"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "taesd" in err[0]
    assert str(empty / "taesd") in err[0]  # the models directory it looked in
    assert "madebyollin/taesd" in err[0]  # and the hub
    assert not operator.exists()  # no other autoencoder stood in for it


def test_fit_without_natural_images_uses_the_builtin_prior(data, tmp_path, monkeypatch):
    calls = record_fit_calls(monkeypatch)
    operator_path = tmp_path / "op.safetensors"
    args = ["fit", "--restored", str(data / "restored"), "-o", str(operator_path)]

    assert main([*args, "--device", "cpu", "-q"]) == 0

    ((params, natural),) = calls
    assert natural is None and params["prior"] == "builtin" and params["vae"] == "taef2"
    operator = LatentOTTransformer.load(operator_path)
    assert (operator.vae, operator.n_images_restored_) == ("taef2", 3)


def test_prior_then_fit_with_it_is_fitting_on_the_natural_images(
    data, operator_file, tmp_path, capsys
):
    prior = tmp_path / "natural.safetensors"
    args = ["prior", str(data / "natural"), "-o", str(prior), "--vae", "pixel", "--device", "cpu"]
    assert main([*args, "-q"]) == 0
    assert "patch sizes 1, 2, 3" in capsys.readouterr().out
    assert NaturalPrior.load(prior).patch_sizes == (1, 2, 3)  # "auto" for any autoencoder
    two = tmp_path / "two.safetensors"
    assert main(["prior", str(data / "natural"), "-o", str(two), "--vae", "pixel", "-q",
                 "--patch-size", "3", "2"]) == 0  # fmt: skip
    assert NaturalPrior.load(two).patch_sizes == (2, 3)

    operator_path = tmp_path / "op.safetensors"
    fit = ["fit", "--restored", str(data / "restored"), "--prior", str(prior), "--vae", "pixel"]
    assert main([*fit, "-o", str(operator_path), "--device", "cpu", "-q"]) == 0

    # The prior holds the natural images' statistics: the operator is the one fitted on them.
    from_prior = LatentOTTransformer.load(operator_path)
    from_images = LatentOTTransformer.load(operator_file)
    image = pixels(data / "restored" / "a.png")
    np.testing.assert_allclose(
        from_prior.transform(image).astype(float), from_images.transform(image), atol=1
    )


def test_fit_without_natural_images_nor_a_builtin_prior_says_how_to_make_one(
    data, tmp_path, capsys
):
    operator = tmp_path / "op.safetensors"
    args = ["fit", "--restored", str(data / "restored"), "-o", str(operator), "--vae", "pixel"]
    assert main([*args, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'pixel'" in err[0] and "latent-ot prior" in err[0]
    assert not operator.exists()


def test_fit_with_a_missing_prior_file_says_how_to_make_one(data, tmp_path, capsys):
    args = ["fit", "--restored", str(data / "restored"), "--prior", str(tmp_path / "no.st")]
    assert main([*args, "-o", str(tmp_path / "op.safetensors"), "--vae", "pixel"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no.st not found" in err[0] and "latent-ot prior" in err[0]


def record_fit_calls(monkeypatch) -> list:
    """Record ``(get_params(), natural)`` of each ``LatentOTTransformer.fit`` call."""
    calls = []
    fit = LatentOTTransformer.fit

    def recording_fit(self, restored, natural=None):
        calls.append((self.get_params(), natural))
        return fit(self, restored, natural)

    monkeypatch.setattr(LatentOTTransformer, "fit", recording_fit)
    return calls


DEMO_OUTPUTS = ("collage.png", "curve.png", "metrics.csv", "metrics.md", "operator.safetensors")


def test_demo_fits_restored_photos_with_the_builtin_prior_of_taef2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    calls = record_fit_calls(monkeypatch)
    out = tmp_path / "demo"

    code = main(["demo", "-o", str(out), "--images", "4", "--size", "64", "--alphas", "0,0.5"])

    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.splitlines()[0].startswith("autoencoder: taef2 (the default, bundled")
    ((params, natural),) = calls
    assert natural is None and params["prior"] == "builtin"  # never the clean photos
    for name in DEMO_OUTPUTS:
        assert (out / name).is_file()
    assert LatentOTTransformer.load(out / "operator.safetensors").vae == "taef2"
    assert sorted(p.name for p in (out / "transported").iterdir()) == ["coffee.png", "rocket.png"]
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["alpha"]) for row in rows] == [0.0, 0.5, 1.0]  # 1 added: the input
    assert "psnr" in rows[0] and "latent_w2 (p=1)" in rows[0] and "| alpha |" in captured.out
    assert f"collage: {out / 'collage.png'}" in captured.out


def test_demo_fits_on_natural_images_when_given(data, tmp_path, monkeypatch, capsys):
    calls = record_fit_calls(monkeypatch)
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--images", "4", "--size", "48", "--alphas", "0"]

    code = main([*args, "--natural", str(data / "natural"), "--vae", "pixel"])

    assert code == 0
    assert capsys.readouterr().err.splitlines()[0].startswith("autoencoder: pixel")
    ((params, natural),) = calls
    assert params["vae"] == "pixel"
    assert [path.name for path in natural] == ["n0.png", "n1.png", "n2.png"]
    operator = LatentOTTransformer.load(out / "operator.safetensors")
    assert (operator.vae, operator.n_images_restored_, operator.n_images_natural_) == (
        "pixel",
        2,
        3,
    )


# -- skipped metrics -----------------------------------------------------------------------------


def test_skipped_metrics_are_noted_once_for_a_whole_sweep(
    data, operator_file, tmp_path, monkeypatch, capsys
):
    built, rows = [], []

    class EvaluatorWithoutTheMetricsExtra:
        """Measures the reference once, as the real one does; some metrics cannot run."""

        def __init__(self, reference, *, metrics=None, **kwargs):
            built.append(metrics)
            self.reference = reference
            self.metrics = ["psnr", "ssim"]
            if metrics is None:
                remedy = 'pip install "latent-ot[metrics]"'
                for metric in ("fid", "kid", "is", "lpips"):
                    reason = "torch-fidelity/torchvision not installed"
                    warnings.warn(MetricSkippedWarning(metric, reason, remedy), stacklevel=2)
            warnings.warn("some other warning", UserWarning, stacklevel=2)

        def __call__(self, images, *, progress=None, latent_stats=None):
            rows.append(images)
            return {"psnr": 20.0 + len(rows), "ssim": 0.5}

    monkeypatch.setattr("latent_ot.cli._report.Evaluator", EvaluatorWithoutTheMetricsExtra)
    args = ["sweep", str(operator_file), str(data / "restored"), "--reference", str(data / "clean")]

    with pytest.warns(UserWarning, match="some other warning"):  # other warnings still shown
        code = main([*args, "-o", str(tmp_path / "sweep"), "--alphas", "0,0.5,1"])

    assert code == 0
    assert built == [None]  # the reference is measured once for the whole sweep
    assert len(rows) == 3  # one row per alpha
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert skipped == [
        "skipped fid, kid, is, lpips: torch-fidelity/torchvision not installed; "
        'pip install "latent-ot[metrics]"'
    ]  # one short line for the whole sweep


# -- help, usage and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("demo", ["--images", "--size", "--natural", "--vae", "--alphas", "--output"]),
        ("fit", ["--restored", "--natural", "--prior", "--vae", "--low-frequency-sigma"]),
        ("prior", ["IMAGES", "--output", "--vae", "--patch-size", "--device"]),
        ("transform", ["--alpha", "--skip-existing", "--shard", "--output", "--batch-size"]),
        ("sweep", ["--reference", "--alphas", "--metrics", "--output"]),
        ("evaluate", ["--restored", "--reference", "--metrics", "--csv"]),
    ],
)
def test_help_of_each_command(command, options, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out


def test_top_level_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "fit", "transform", "sweep", "evaluate", "prior"):
        assert command in out
    words = " ".join(out.split())  # as wrapped to any terminal's width
    assert "the default, taef2, is bundled" in words and "sd-vae-ft-mse is the paper's" in words


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["sweep", "op", "x", "--reference", "y", "-o", "z", "--alphas", "1:0:0.5"],
        ["transform", "op", "x", "-o", "y", "--shard", "2/2"],
        ["evaluate", "--restored", "x", "--reference", "y", "--metrics", "psnr,nope"],
        ["demo", "--images", "2"],
        ["fit", "--restored", "x", "--natural", "y", "--prior", "p", "-o", "op"],
        ["prior", "-o", "prior.safetensors"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_an_error_is_one_line_and_debug_raises_it(tmp_path, capsys):
    args = ["transform", str(tmp_path / "missing.safetensors"), str(tmp_path), "-o", "out"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "missing.safetensors not found" in err and "Traceback" not in err

    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        main([*args, "--debug"])


def test_python_dash_m_runs_the_command(tmp_path):
    missing = tmp_path / "missing.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "latent_ot", "--debug", "transform", str(missing), ".", "-o", "o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "FileNotFoundError" in result.stderr
    assert not (tmp_path / "o").exists()


# -- arguments never end in a traceback, Ctrl-C and warnings -------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sweep", "op", "x", "-o", "y", "--alphas", "0:inf:1"],
            "argument --alphas: expected START:STOP:STEP with STEP > 0 and STOP >= START "
            "(e.g. -1:2:0.25) or a comma-separated list (e.g. 0,0.5,1); got '0:inf:1'",
        ),
        (
            ["sweep", "op", "x", "-o", "y", "--alphas", "-1e308:1e308:1"],
            "argument --alphas: expected START:STOP:STEP with STEP > 0 and STOP >= START "
            "(e.g. -1:2:0.25) or a comma-separated list (e.g. 0,0.5,1); got '-1e308:1e308:1'",
        ),
        (
            ["sweep", "op", "x", "-o", "y", "--alphas", "0,nan"],
            "argument --alphas: expected at most 10000 finite alphas; got '0,nan'",
        ),
        (
            ["demo", "--size", "100000"],
            "argument --size: PX must be an int in [32, 2048], got 100000",
        ),
        (
            ["transform", "op", "x", "-o", "y", "--seed", str(2**64)],
            f"argument --seed: SEED must be an int in [0, 4294967295], got {2**64}",
        ),
        (
            ["transform", "op", "x", "-o", "y", "--alpha", "inf"],
            "argument --alpha: A must be a finite number, got inf",
        ),
        (
            ["fit", "--restored", "x", "-o", "y", "--batch-size", "1e400"],
            "argument --batch-size: N must be an int >= 1, got str '1e400'",
        ),
    ],
)
def test_out_of_range_numbers_are_one_line_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(f"error: {message}")
    assert "Traceback" not in err


def test_ctrl_c_is_one_line_and_exit_status_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(latent_ot.cli, "_run", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "latent-ot: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "demo"])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_while_torch_imports_is_one_line(tmp_path):
    # The entry point imports nothing heavy before main: "ready" is printed before torch loads.
    script = (
        "import sys; from latent_ot.cli import main; assert 'torch' not in sys.modules; "
        "print('ready', flush=True); sys.exit(main(['demo', '-o', 'out', '-q']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err == "latent-ot: interrupted\n"


def test_other_packages_warnings_are_not_shown_and_ours_are(monkeypatch):
    shown = []

    def warn(argv):
        # Records what the command's filters let through (they stay as they are in the block).
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("old", FutureWarning, "hub.py", 1, module="huggingface_hub")
            warnings.warn_explicit("few images", UserWarning, "fit.py", 1, module="latent_ot.cli")
        shown.extend(str(warning.message) for warning in caught)
        return 0

    monkeypatch.setattr(latent_ot.cli, "_run", warn)
    assert main(["demo"]) == 0
    assert shown == ["few images"]


# -- photos and unreadable files -----------------------------------------------------------------


def test_transform_turns_photos_upright_unless_declined(operator_file, tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(smooth_image(np.random.default_rng(2), 24, 40)).save(
        folder / "sideways.jpg", exif=exif.tobytes()
    )
    for flags, size, orientation in (([], (24, 40), 1), (["--no-exif-orientation"], (40, 24), 6)):
        out = tmp_path / f"out{len(flags)}"
        argv = ["transform", str(operator_file), str(folder), "-o", str(out), "-q", *flags]
        assert main([*argv, "--alpha", "0.5"]) == 0
        with Image.open(out / "sideways.jpg") as written:
            assert written.size == size
            assert written.getexif()[ExifTags.Base.Orientation] == orientation


def test_fit_skips_unreadable_files_with_the_report_transform_gives(data, tmp_path, capsys):
    folder = folder_of_six_with_two_broken(tmp_path)
    operator = tmp_path / "op.safetensors"
    args = ["fit", "--restored", str(folder), "--natural", str(data / "natural")]

    code = main([*args, "-o", str(operator), "--vae", "pixel", "--device", "cpu", "-q"])

    captured = capsys.readouterr()
    assert code == 1 and operator.is_file()
    errors = [line for line in captured.err.splitlines() if line.startswith("latent-ot: error:")]
    assert [line.split(": ")[2] for line in errors] == [
        str(folder / "garbage.png"),
        str(folder / "truncated.jpg"),
    ]
    assert "fitted on 4 restored images" in captured.out
    assert captured.out.strip().endswith("; 2 unreadable file(s) skipped")
