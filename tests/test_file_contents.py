"""Operator and prior files are checked for what they mean, pinned, and tied to their autoencoder.

Every bad file here is a real file written through ``write_operator`` (whose checksums it
passes, as anyone's rewrite would), and every refusal is asserted by its exact message.
"""

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage import data

from latent_ot import GaussianOTTransformer, GaussianStats, LatentOTTransformer
from latent_ot.autoencoders import PixelAutoencoder, load_autoencoder
from latent_ot.autoencoders._base import weights_fingerprint
from latent_ot.exceptions import IncompatibleAutoencoderError, OperatorFileError
from latent_ot.file_contents import MAP_VARIANCE_FACTOR, upper_triangle
from latent_ot.priors import NaturalPrior, builtin_prior
from latent_ot.provenance import autoencoder_provenance, check_same_autoencoder, file_sha256
from latent_ot.serialization import read_operator, write_operator

_RESERVED = ("format_version", "latent_ot_version")


def _images(seed: int, count: int = 3) -> list[np.ndarray]:
    """Crops of scikit-image's astronaut, as float images in [0, 1]."""
    photo = data.astronaut()[::4, ::4] / 255.0
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, photo.shape[0] - 16, size=(count, 2))
    return [photo[y : y + 16, x : x + 16] for y, x in corners]


@pytest.fixture(scope="module")
def operator_file(tmp_path_factory):
    restored = [image**2 for image in _images(0)]
    operator = LatentOTTransformer(vae="pixel", patch_size=2).fit(restored, _images(1))
    path = tmp_path_factory.mktemp("operator") / "operator.safetensors"
    operator.save(path)
    return path


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    pixels = torch.as_tensor(data.coffee()[::8, ::8].reshape(-1, 3) / 255.0)
    stats = GaussianStats.from_samples(pixels)
    prior = NaturalPrior(
        "pixel", 3, 1, {(64, 1): stats, (128, 1): stats}, {64: 60.0, 128: 120.0}, {64: 2, 128: 2}
    )
    path = tmp_path_factory.mktemp("prior") / "prior.safetensors"
    prior.save(path)
    return path


def _rewrite(source, target, edit):
    """Write to ``target`` the file ``source`` with ``edit(tensors, metadata)`` applied."""
    tensors, metadata = read_operator(source)
    for key in _RESERVED:
        metadata.pop(key)
    edit(tensors, metadata)
    write_operator(target, tensors, metadata)
    return target


def _refused(path, message, reader=read_operator):
    with pytest.raises(OperatorFileError) as caught:
        reader(path)
    assert str(caught.value) == f"cannot load operator file {str(path)!r}: {message}"


def _set(name, value):
    return lambda tensors, metadata: tensors.__setitem__(name, value)


def _meta(*path, value):
    def edit(tensors, metadata):
        node = metadata
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


_DELETE = object()


def _asymmetric(tensors, metadata):
    scatter = tensors["restored.scatter"].clone()
    scatter[0, 1] += 0.31 * float(scatter.abs().max())
    tensors["restored.scatter"] = scatter


OPERATOR_CASES = {
    "negative-definite scatter": (
        lambda t, m: t.__setitem__("restored.scatter", -t["restored.scatter"]),
        r"tensor 'restored.scatter' is not positive semi-definite \(eigenvalues from -\S+ to \S+\)",
    ),
    "non-symmetric scatter": (
        _asymmetric,
        r"tensor 'restored.scatter' is not symmetric \(max asymmetry \S+\)",
    ),
    "map scaled by 1e30": (
        lambda t, m: t.__setitem__("transport.map.matrix", t["transport.map.matrix"] * 1e30),
        r"tensor 'transport.map.matrix' sends the source covariance to a total variance of "
        rf"\S+, more than {MAP_VARIANCE_FACTOR:g} times the target's \S+: it is not the map of "
        "these statistics",
    ),
    "int64 map": (
        lambda t, m: t.__setitem__("transport.map.matrix", t["transport.map.matrix"].long()),
        "tensor 'transport.map.matrix' has dtype int64; expected float32 or float64",
    ),
    "NaN in the map": (
        lambda t, m: t["transport.map.matrix"].__setitem__((0, 0), float("nan")),
        "tensor 'transport.map.matrix' holds NaN or infinity",
    ),
    "inf in a mean": (
        lambda t, m: t["natural.mean"].__setitem__(1, float("inf")),
        "tensor 'natural.mean' holds NaN or infinity",
    ),
    "wrong-shape mean": (
        _set("restored.mean", torch.zeros(5, dtype=torch.float64)),
        r"tensor 'restored.mean' has shape \(5,\); expected \(12,\)",
    ),
    "n_features_in 7": (
        _meta("transport", "n_features_in", value=7),
        r"tensor 'transport.source.mean' has shape \(12,\); expected \(7,\)",
    ),
    "missing counts": (_meta("counts", value=_DELETE), "metadata key 'counts' is missing"),
    "missing transport": (_meta("transport", value=_DELETE), "metadata key 'transport' is missing"),
    "missing tensor": (
        lambda t, m: t.pop("natural.scatter"),
        "tensor 'natural.scatter' is missing",
    ),
    "extra tensor": (
        _set("extra", torch.zeros(1)),
        "tensor 'extra' is not part of a LatentOTTransformer file",
    ),
    "latent_channels 0": (
        _meta("latent_channels", value=0),
        r"metadata key 'latent_channels' must be an integer in \[1, 2\*\*53\], got 0",
    ),
    "latent_channels '32'": (
        _meta("latent_channels", value="32"),
        r"metadata key 'latent_channels' must be an integer in \[1, 2\*\*53\], got '32'",
    ),
    "patch_dim not square": (
        _meta("patch_dim", value=15),
        r"metadata key 'patch_dim' is 15: not latent_channels \(3\) times the square of the "
        r"patch size \(2\)",
    ),
    "count 1": (
        _meta("counts", "restored", value=1),
        r"metadata key 'counts.restored' must be an integer in \[2, 2\*\*53\], got 1: "
        "statistics of fewer than 2 vectors have no covariance",
    ),
    "negative w2": (
        _meta("transport", "w2", value=-1.0),
        "metadata key 'transport.w2' must be a number >= 0, got -1.0",
    ),
}


@pytest.mark.parametrize("case", list(OPERATOR_CASES))
def test_an_operator_file_is_checked_for_what_it_means(operator_file, tmp_path, case):
    edit, message = OPERATOR_CASES[case]
    path = _rewrite(operator_file, tmp_path / "bad.safetensors", edit)
    _assert_refused(LatentOTTransformer.load, path, message)


def test_a_genuine_operator_and_its_stochastic_map_pass(operator_file, tmp_path):
    # The stochastic map's matrix is not symmetric: no symmetry is asked of it.
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(60, 4)) @ np.diag([1.0, 1.0, 1.0, 0.0])
    target = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    ot = GaussianOTTransformer(random_state=0).fit(samples, target=target)
    assert not np.allclose(ot.transport_matrix_, ot.transport_matrix_.T)
    ot.save(tmp_path / "ot.safetensors")
    loaded = GaussianOTTransformer.load(tmp_path / "ot.safetensors")
    np.testing.assert_array_equal(loaded.transform(samples), ot.transform(samples))
    assert LatentOTTransformer.load(operator_file).patch_size_ == 2


# --------------------------------------------------------------------------------------------
# Priors


def _prior_meta(*path, value):
    return _meta(*path, value=value)


PRIOR_CASES = {
    "count 1": (
        _prior_meta("counts", "s64.p1", value=1),
        r"metadata key 'counts.s64.p1' must be an integer in \[2, 2\*\*53\], got 1: "
        "statistics of fewer than 2 vectors have no covariance",
    ),
    "negative-definite scatter": (
        lambda t, m: t.__setitem__("s64.p1.scatter", -t["s64.p1.scatter"]),
        r"tensor 's64.p1.scatter' is not positive semi-definite \(eigenvalues from \S+ to \S+\)",
    ),
    "sides empty": (
        _prior_meta("sides", value={}),
        r"metadata key 'sides' must be a non-empty object, got \{\}",
    ),
    "side 0": (
        _prior_meta("sides", "64", value=0),
        "metadata key 'sides.64' must be a positive number, got 0",
    ),
    "scale 0": (
        lambda t, m: (m["sides"].__setitem__("0", 1.0), m["n_images"].__setitem__("0", 1)),
        "metadata key 'sides.0' is not a positive integer scale",
    ),
    "scale without statistics": (
        lambda t, m: (m["sides"].__setitem__("256", 240.0), m["n_images"].__setitem__("256", 1)),
        "scale 256 is listed in 'sides' but has no statistics",
    ),
    "latent_channels '32'": (
        _prior_meta("latent_channels", value="32"),
        r"metadata key 'latent_channels' must be an integer in \[1, 2\*\*53\], got '32'",
    ),
    "missing counts": (_prior_meta("counts", value=_DELETE), "metadata key 'counts' is missing"),
    "NaN in a mean": (
        lambda t, m: t["s128.p1.mean"].__setitem__(0, float("nan")),
        "tensor 's128.p1.mean' holds NaN or infinity",
    ),
    "int64 scatter": (
        lambda t, m: t.__setitem__("s64.p1.scatter", t["s64.p1.scatter"].long()),
        "tensor 's64.p1.scatter' has dtype int64; expected float32 or float64",
    ),
    "bad fingerprint": (
        _prior_meta("autoencoder_fingerprint", value="deadbeef"),
        r"metadata key 'autoencoder_fingerprint' must be a sha256 \(64 lowercase hexadecimal "
        r"digits\), got 'deadbeef'",
    ),
}


@pytest.mark.parametrize("case", list(PRIOR_CASES))
def test_a_prior_file_is_checked_for_what_it_means(prior_file, tmp_path, case):
    edit, message = PRIOR_CASES[case]
    path = _rewrite(prior_file, tmp_path / "bad.safetensors", edit)
    _assert_refused(NaturalPrior.load, path, message)


def _assert_refused(load, path, message: str) -> None:
    """``load(path)`` raises an OperatorFileError naming the file, then ``message`` exactly."""
    with pytest.raises(OperatorFileError) as caught:
        load(path)
    prefix = f"cannot load operator file {str(path)!r}: "
    assert str(caught.value).startswith(prefix)
    assert re.fullmatch(message, str(caught.value)[len(prefix) :])


def test_a_prior_of_one_vector_is_refused_in_memory_too():
    one = GaussianStats.from_samples(torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"stats\[\(64, 1\)\] holds 1 vector\(s\)"):
        NaturalPrior("pixel", 3, 1, {(64, 1): one}, {64: 60.0}, {64: 1})


def test_a_prior_round_trips_exactly_and_near_symmetric_scatters_are_symmetrised(tmp_path):
    samples = torch.as_tensor(data.chelsea()[::8, ::8].reshape(-1, 3) / 255.0)
    stats = GaussianStats.from_samples(samples)
    stats.scatter = (stats.scatter + stats.scatter.mT) / 2
    prior = NaturalPrior("pixel", 3, 1, {(64, 1): stats}, {64: 60.0}, {64: 1})
    prior.save(tmp_path / "exact.safetensors")
    assert NaturalPrior.load(tmp_path / "exact.safetensors").stats[(64, 1)] == stats
    # round-off asymmetry, as a float64 accumulation leaves: stored as the symmetric part
    nudged = stats.copy()
    nudged.scatter[0, 1] += 1e-12 * float(stats.scatter.abs().max())
    NaturalPrior("pixel", 3, 1, {(64, 1): nudged}, {64: 60.0}, {64: 1}).save(tmp_path / "n.st")
    loaded = NaturalPrior.load(tmp_path / "n.st").stats[(64, 1)].scatter
    torch.testing.assert_close(loaded, (nudged.scatter + nudged.scatter.mT) / 2, rtol=0, atol=0)
    skewed = stats.copy()
    skewed.scatter[0, 1] += 0.1 * float(stats.scatter.abs().max())
    with pytest.raises(ValueError, match=r"stats\[\(64, 1\)\]: its scatter matrix is not symm"):
        NaturalPrior("pixel", 3, 1, {(64, 1): skewed}, {64: 60.0}, {64: 1}).save(tmp_path / "s")


def test_a_prior_scatter_stored_whole_is_checked_like_a_triangle(prior_file, tmp_path):
    def whole_and_skewed(tensors, metadata):
        whole = NaturalPrior.load(prior_file).stats[(64, 1)].scatter.clone()
        whole[2, 0] += 1.0
        tensors["s64.p1.scatter"] = whole

    path = _rewrite(prior_file, tmp_path / "whole.safetensors", whole_and_skewed)
    _refused(path, "tensor 's64.p1.scatter' is not symmetric (max asymmetry 1.0e+00)")
    triangle = upper_triangle(torch.eye(3))
    assert triangle.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]


# --------------------------------------------------------------------------------------------
# Size, pinning


def test_an_oversize_sparse_file_is_refused_before_its_data_is_read(
    operator_file, tmp_path, monkeypatch
):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(operator_file.read_bytes())
    expected = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(2**31)  # sparse: no disk used
    read = []
    real_open = open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def read(self, size=-1):
            chunk = self.file.read(size)
            read.append(len(chunk))
            return chunk

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    from latent_ot import serialization

    monkeypatch.setattr(serialization, "open", Counting, raising=False)
    _refused(
        path,
        f"it is {2**31} bytes long, its header accounts for {expected}: not a latent-ot "
        "operator file, or bytes were appended",
    )
    assert sum(read) < expected


def test_a_sparse_file_of_zeros_is_refused_after_nine_bytes(tmp_path):
    path = tmp_path / "zeros.safetensors"
    with open(path, "wb") as file:
        file.truncate(2**31)
    _refused(path, "not a latent-ot operator file (no safetensors header)")


def test_a_pinned_sha256_is_checked(operator_file, prior_file):
    digest = file_sha256(operator_file)
    assert LatentOTTransformer.load(operator_file).patch_dim_ == 12
    assert read_operator(operator_file, sha256=digest.upper())[1]["patch_dim"] == 12
    assert read_operator(operator_file, sha256=f"sha256:{digest}")[1]["patch_dim"] == 12
    wrong = "0" * 64
    with pytest.raises(OperatorFileError) as caught:
        read_operator(operator_file, sha256=wrong)
    assert str(caught.value).endswith(
        f"its sha256 is {digest}, expected {wrong}: it is not the file that was published "
        "(changed, damaged or replaced)"
    )
    assert NaturalPrior.load(prior_file, sha256=file_sha256(prior_file)).scales == (64, 128)
    with pytest.raises(OperatorFileError, match=f"its sha256 is {file_sha256(prior_file)}"):
        NaturalPrior.load(prior_file, sha256=wrong)
    for bad in ("abc", 3, "g" * 64):
        with pytest.raises(
            ValueError, match=re.escape(f"must be 64 hexadecimal digits (a sha256), got {bad!r}")
        ):
            read_operator(operator_file, sha256=bad)


# --------------------------------------------------------------------------------------------
# Provenance


def test_fingerprints_follow_the_weights_not_their_dtype_or_device():
    layer = torch.nn.Linear(3, 2)
    fingerprint = weights_fingerprint(layer)
    assert re.fullmatch("[0-9a-f]{64}", fingerprint)
    assert weights_fingerprint(layer.double()) == fingerprint
    assert weights_fingerprint(layer.half()) == fingerprint
    with torch.no_grad():
        layer.weight[0, 0] += 1.0
    assert weights_fingerprint(layer) != fingerprint
    assert PixelAutoencoder().fingerprint() == PixelAutoencoder().fingerprint()


def test_the_builtin_prior_matches_the_bundled_autoencoder_by_construction():
    taef2 = load_autoencoder("taef2")
    prior = builtin_prior("taef2")
    assert prior.fingerprint == taef2.fingerprint()
    prior.check_autoencoder(taef2)
    before = taef2.fingerprint()
    taef2.to(dtype=torch.float64)  # a cast keeps the provenance
    assert taef2.fingerprint() == before


def test_a_prior_of_other_weights_is_refused_unless_overridden(prior_file, tmp_path):
    pixel = PixelAutoencoder()
    prior = NaturalPrior.load(prior_file)
    other = NaturalPrior(**{**vars(prior), "fingerprint": "ab" * 32})
    other.save(tmp_path / "other.safetensors")
    loaded = NaturalPrior.load(tmp_path / "other.safetensors")
    assert loaded.fingerprint == "ab" * 32
    with pytest.raises(IncompatibleAutoencoderError) as caught:
        loaded.check_autoencoder(pixel)
    assert str(caught.value) == (
        f"this prior was made with the autoencoder pixel (weights abababababab), not with "
        f"pixel (weights {pixel.fingerprint()[:12]}): its statistics describe another "
        "autoencoder's latents. Use the autoencoder it was made with, or pass "
        "check_autoencoder=False to NaturalPrior.load if you know they match"
    )
    loaded.check_autoencoder(pixel, check_fingerprint=False)
    NaturalPrior(**{**vars(prior), "fingerprint": pixel.fingerprint()}).check_autoencoder(pixel)


def test_an_operator_provenance_check_names_both_autoencoders():
    pixel = PixelAutoencoder()
    recorded = autoencoder_provenance(pixel)
    assert recorded == {"name": "pixel", "fingerprint": pixel.fingerprint()}
    check_same_autoencoder(recorded, pixel, what="operator 'op'", override="--allow")
    check_same_autoencoder(None, pixel, what="operator 'op'", override="--allow")
    with pytest.raises(IncompatibleAutoencoderError, match="operator 'op' was made with the auto"):
        check_same_autoencoder(
            {"name": "sd-vae", "fingerprint": "cd" * 32}, pixel, what="operator 'op'", override="x"
        )


# --------------------------------------------------------------------------------------------
# Fuzz: any edit of a genuine file's contents loads as a valid file or is refused cleanly

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)
_FACTORS = st.sampled_from([0.0, -1.0, 1e30, -1e-30, float("nan"), float("inf"), 2.0])


def _leaves(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif path and path[0] not in ("kind", "params"):
        yield path


@st.composite
def _edits(draw, tensors, metadata):
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(tensors)))
        how = draw(st.sampled_from(["scale", "entry", "dtype", "shape", "drop"]))
        factor = draw(_FACTORS)
        return ("tensor", name, how, factor, draw(st.integers(0, 10**6)))
    path = draw(st.sampled_from(sorted(_leaves(metadata))))
    return ("metadata", path, draw(_VALUES))


def _apply(edit, tensors, metadata):
    if edit[0] == "metadata":
        _, path, value = edit
        node = metadata
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return
    _, name, how, factor, index = edit
    tensor = tensors[name]
    if how == "scale":
        tensors[name] = tensor * factor
    elif how == "entry" and tensor.numel():
        flat = tensor.clone().reshape(-1)
        flat[index % flat.numel()] = factor
        tensors[name] = flat.reshape(tensor.shape)
    elif how == "dtype":
        tensors[name] = tensor.to(torch.int64 if factor == 0.0 else torch.float16)
    elif how == "shape":
        tensors[name] = tensor.reshape(-1)[: max(tensor.numel() - 1, 0)].clone()
    elif how == "drop":
        del tensors[name]


def _fuzz(source, tmp_path, data_strategy, load):
    tensors, metadata = read_operator(source)
    for key in _RESERVED:
        metadata.pop(key)
    edit = data_strategy.draw(_edits(tensors, metadata))
    _apply(edit, tensors, metadata)
    path = tmp_path / "fuzzed.safetensors"
    try:
        write_operator(path, tensors, metadata)
    except (TypeError, ValueError):
        return  # not even writable: nothing to read
    try:
        loaded = load(path)
    except OperatorFileError:
        return
    return loaded


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_operator_contents_load_as_valid_operators_or_are_refused(
    operator_file, tmp_path, data_strategy
):
    operator = _fuzz(operator_file, tmp_path, data_strategy, LatentOTTransformer.load)
    if operator is not None:  # whatever passed the checks transforms to finite images
        output = operator.transform(_images(2, 1))[0]
        assert np.isfinite(output).all()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_prior_contents_load_as_valid_priors_or_are_refused(
    prior_file, tmp_path, data_strategy
):
    prior = _fuzz(prior_file, tmp_path, data_strategy, NaturalPrior.load)
    if prior is not None:
        assert prior.scales and prior.patch_sizes
        for stats in prior.stats.values():
            assert stats.count >= 2
            assert torch.isfinite(stats.covariance).all()
        assert prior.select(prior.patch_sizes[0], 100.0)[1] in prior.scales


def test_kinds_not_checked_are_left_to_their_reader(tmp_path):
    path = tmp_path / "demo.safetensors"
    write_operator(path, {"x": torch.tensor([float("nan")])}, {"kind": "Demo"})
    assert torch.isnan(read_operator(path)[0]["x"]).all()
