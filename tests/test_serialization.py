"""Tests of the safe operator file format (latent_ot.serialization)."""

import hashlib
import json
import os
import pickle
import random

import pytest
import safetensors.torch
import torch

from latent_ot import __version__, serialization
from latent_ot.serialization import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    OperatorFileError,
    read_operator,
    write_operator,
)


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "cov": torch.randn(5, 5, generator=generator, dtype=torch.float64),
        "mean": torch.randn(5, generator=generator, dtype=torch.float32),
        "count": torch.tensor(123456789012345, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(2, 3, generator=generator).to(torch.bfloat16),
        "empty": torch.zeros(0, 4, dtype=torch.float64),
    }


def _metadata() -> dict:
    return {
        "kind": "EnvelopeTest",  # a kind whose contents read_operator does not check
        "params": {"patch_size": 3, "alpha": 0.1, "rtol": None, "vae": "taesd"},
        "autoencoder": {"name": 'dé/ja "vu" \\ \n', "factor": 8, "latent_channels": 4},
        "floats": [-0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2],
        "big": 2**80,
        "flag": False,
        "empty": {"list": [], "dict": {}, "text": ""},
    }


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "operator.safetensors"
    write_operator(path, _tensors(), _metadata())
    return path


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_is_bitwise(saved):
    tensors, metadata = read_operator(str(saved), expected_kind="EnvelopeTest")

    expected = _tensors()
    assert tensors.keys() == expected.keys()
    for name, tensor in expected.items():
        assert _bitwise_equal(tensors[name], tensor), name
    assert metadata == {
        **_metadata(),
        "format_version": FORMAT_VERSION,
        "latent_ot_version": __version__,
    }
    assert str(metadata["floats"][0]) == "-0.0"


def test_views_grad_and_tuples_are_stored_as_plain_copies(tmp_path):
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    weights = torch.ones(2, requires_grad=True)
    path = tmp_path / "op.safetensors"
    write_operator(path, {"t": base.T, "w": weights}, {"kind": "K", "sizes": (1, (2, 3))})

    tensors, metadata = read_operator(path)
    assert _bitwise_equal(tensors["t"], base.T.contiguous())
    assert not tensors["w"].requires_grad
    assert metadata["sizes"] == [1, [2, 3]]


def test_no_tensors_round_trip(tmp_path):
    path = tmp_path / "op.safetensors"
    write_operator(path, {}, {"kind": "K"})
    assert read_operator(path)[0] == {}


def test_file_bytes_are_deterministic(tmp_path):
    write_operator(tmp_path / "a", _tensors(), _metadata())
    reordered_tensors = dict(reversed(list(_tensors().items())))
    reordered_metadata = dict(reversed(list(_metadata().items())))
    write_operator(tmp_path / "b", reordered_tensors, reordered_metadata)

    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_file_is_standard_safetensors_with_one_json_document(saved):
    with safetensors.safe_open(saved, framework="pt") as file:
        header_metadata = file.metadata()
        assert set(file.keys()) == set(_tensors())
    assert list(header_metadata) == ["latent_ot"]
    document = json.loads(header_metadata["latent_ot"])
    assert document["format_version"] == FORMAT_VERSION
    assert document["metadata"]["kind"] == "EnvelopeTest"
    assert document["tensors"]["cov"]["dtype"] == "float64"


def test_read_never_unpickles(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("read_operator must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    tensors, _ = read_operator(saved)
    assert tensors.keys() == _tensors().keys()


# --------------------------------------------------------------------------------------------
# Foreign and malicious files


class _MakesDirectoryWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_payload_is_rejected_without_running(tmp_path, writer):
    def write_payload(path, marker):
        if writer == "pickle":
            path.write_bytes(pickle.dumps({"cov": _MakesDirectoryWhenUnpickled(marker)}))
        else:
            torch.save({"cov": _MakesDirectoryWhenUnpickled(marker)}, path)

    # Control: the same kind of payload does run when unpickled.
    control_marker = tmp_path / "control-ran"
    write_payload(tmp_path / "control.pt", control_marker)
    if writer == "pickle":
        pickle.loads((tmp_path / "control.pt").read_bytes())
    else:
        torch.load(tmp_path / "control.pt", weights_only=False)
    assert control_marker.is_dir()

    marker = tmp_path / "payload-ran"
    path = tmp_path / "operator.safetensors"
    write_payload(path, marker)
    with pytest.raises(OperatorFileError, match="not a latent-ot operator file"):
        read_operator(path)
    assert not marker.exists()


def test_plain_safetensors_file_is_not_an_operator(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(OperatorFileError, match="not a latent-ot operator file"):
        read_operator(path)


def test_absurd_header_size_is_refused_before_reading_it(tmp_path):
    path = _write_bytes(tmp_path / "op.safetensors", (2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(OperatorFileError, match=f"limit {MAX_HEADER_BYTES}"):
        read_operator(path)


def test_reformatted_header_is_refused(saved):
    data = saved.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), indent=1).encode()
    _write_bytes(saved, len(header).to_bytes(8, "little") + header + data[8 + size :])
    with pytest.raises(OperatorFileError, match="header was altered"):
        read_operator(saved)


def test_edited_metadata_value_fails_its_checksum(saved):
    data = saved.read_bytes()
    assert data.count(b'\\"patch_size\\":3') == 1
    _write_bytes(saved, data.replace(b'\\"patch_size\\":3', b'\\"patch_size\\":5'))
    with pytest.raises(OperatorFileError, match="checksum mismatch of its latent-ot metadata"):
        read_operator(saved)


def test_edited_tensor_bytes_fail_their_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-1] ^= 0x01  # the last byte belongs to a tensor
    _write_bytes(saved, bytes(data))
    with pytest.raises(OperatorFileError, match="sha256 mismatch of tensor"):
        read_operator(saved)


def _document(path) -> dict:
    with safetensors.safe_open(path, framework="pt") as file:
        return json.loads(file.metadata()["latent_ot"])


def _forge(path, tensors, document, indent=None) -> None:
    """Write a file as a forger would: any tensors, any document, a valid checksum."""
    unsigned = {key: value for key, value in document.items() if key != "sha256"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
    signed = {**unsigned, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), indent=indent)
    safetensors.torch.save_file(tensors, path, metadata={"latent_ot": text})


def test_forged_checksum_reproduces_the_writer(saved, tmp_path):
    # Guards the helper below: a forgery of the genuine content is the genuine file.
    forged = tmp_path / "forged.safetensors"
    _forge(forged, _tensors(), _document(saved))
    assert forged.read_bytes() == saved.read_bytes()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda tensors, document: tensors.pop("mask"), r"missing \['mask'\]"),
        (lambda tensors, document: tensors.update(x=torch.ones(1)), r"unexpected \['x'\]"),
        (
            lambda tensors, document: tensors.update(mean=tensors["mean"].view(torch.int32)),
            "dtype mismatch of tensor 'mean'",
        ),
        (
            lambda tensors, document: tensors.update(cov=tensors["cov"].T.contiguous()),
            "sha256 mismatch of tensor 'cov'",
        ),
        (lambda tensors, document: document.update(format="other"), "not a latent-ot operator"),
        (lambda tensors, document: document["metadata"].pop("kind"), "no 'kind'"),
        (lambda tensors, document: document.update(tensors=[]), "manifest is malformed"),
        (lambda tensors, document: document.update(format_version=0), "not a positive integer"),
    ],
)
def test_forged_files_with_valid_checksums_are_refused(saved, edit, message):
    tensors, document = _tensors(), _document(saved)
    edit(tensors, document)
    _forge(saved, tensors, document)
    with pytest.raises(OperatorFileError, match=message):
        read_operator(saved)


def test_reformatted_metadata_is_refused_though_its_checksum_holds(saved):
    _forge(saved, _tensors(), _document(saved), indent=1)
    with pytest.raises(OperatorFileError, match="not canonical JSON"):
        read_operator(saved)


# --------------------------------------------------------------------------------------------
# Truncation and corruption: every damaged file raises OperatorFileError


def _assert_rejected(path, data: bytes) -> None:
    _write_bytes(path, data)
    with pytest.raises(OperatorFileError, match=str(path.name)):
        read_operator(path)


def test_truncation_at_random_offsets_is_caught(saved):
    data = saved.read_bytes()
    offsets = [0, 1, 8, len(data) - 1, *random.Random(0).sample(range(len(data)), 20)]
    for offset in offsets:
        _assert_rejected(saved, data[:offset])


def test_byte_flips_at_random_offsets_are_caught(saved):
    data = saved.read_bytes()
    rng = random.Random(1)
    for offset in rng.sample(range(len(data)), 20):
        damaged = bytearray(data)
        damaged[offset] ^= rng.randrange(1, 256)
        _assert_rejected(saved, bytes(damaged))


def test_every_single_byte_change_is_caught(tmp_path):
    # Exhaustive on a small file, including changes JSON ignores (whitespace) and ones that
    # keep it parsable (digits, quotes): none may go unnoticed.
    path = tmp_path / "op.safetensors"
    write_operator(path, {"m": torch.arange(3.0)}, {"kind": "K", "alpha": [1.5]})
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    accepted = []
    with open(path, "r+b") as file:  # edited in place: rewriting whole files is slow on some disks
        for offset in range(len(data)):
            replacements = {data[offset] ^ 0xFF, data[offset] ^ 0x01}
            if offset < header_end:
                replacements |= set(b' \n\t0"\\')
            for replacement in [*sorted(replacements - {data[offset]}), data[offset]]:
                file.seek(offset)
                file.write(bytes([replacement]))
                file.flush()
                if replacement == data[offset]:
                    continue  # restored
                try:
                    read_operator(path)
                except OperatorFileError:
                    continue
                accepted.append((offset, replacement))
    assert accepted == []
    assert path.read_bytes() == data


def test_appended_bytes_are_caught(saved):
    _assert_rejected(saved, saved.read_bytes() + b"\x00")


# --------------------------------------------------------------------------------------------
# Atomic writes


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_interrupted_save_keeps_the_previous_file(saved, monkeypatch, interruption, step):
    previous = saved.read_bytes()

    def interrupt(*args, **kwargs):
        raise interruption

    monkeypatch.setattr(os, step, interrupt)
    with pytest.raises(type(interruption)):
        write_operator(saved, {"other": torch.ones(3)}, {"kind": "Other"})
    monkeypatch.undo()

    assert saved.read_bytes() == previous
    assert os.listdir(saved.parent) == [saved.name]
    assert read_operator(saved, expected_kind="EnvelopeTest")[0].keys() == _tensors().keys()


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_operator(tmp_path / "op.safetensors", _tensors(), _metadata())
    assert os.listdir(tmp_path) == []


def test_save_replaces_a_previous_file(saved):
    write_operator(saved, {"other": torch.ones(3)}, {"kind": "Other"})
    tensors, _ = read_operator(saved, expected_kind="Other")
    assert list(tensors) == ["other"]
    assert os.listdir(saved.parent) == [saved.name]


# --------------------------------------------------------------------------------------------
# Versions, kinds and paths


def test_newer_format_version_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "future.safetensors"
    monkeypatch.setattr(serialization, "FORMAT_VERSION", FORMAT_VERSION + 1)
    write_operator(path, _tensors(), _metadata())
    monkeypatch.undo()

    with pytest.raises(OperatorFileError, match=r"newer latent-ot \(format 2.*upgrade latent-ot"):
        read_operator(path)


def test_expected_kind_mismatch(saved):
    with pytest.raises(OperatorFileError, match="holds a EnvelopeTest, expected a Gaussian"):
        read_operator(saved, expected_kind="GaussianOTTransformer")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        read_operator(tmp_path / "nowhere.safetensors")


def test_directory_paths_are_refused(tmp_path):
    with pytest.raises(OperatorFileError, match="is a directory"):
        read_operator(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_operator(tmp_path, {}, {"kind": "K"})


def test_missing_directory_is_refused_at_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_operator(tmp_path / "no" / "op.safetensors", {}, {"kind": "K"})


def test_bad_path_and_kind_types(saved):
    with pytest.raises(TypeError, match="path must be"):
        read_operator(3)
    with pytest.raises(TypeError, match="expected_kind"):
        read_operator(saved, expected_kind=1)


# --------------------------------------------------------------------------------------------
# What cannot be written


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        (
            {"kind": "K", "params": {"rtol": float("nan")}},
            ValueError,
            r"\['params'\]\['rtol'\].*non-finite",
        ),
        (
            {"kind": "K", "bounds": [0.0, float("inf")]},
            ValueError,
            r"\['bounds'\]\[1\].*non-finite",
        ),
        ({"kind": "K", "when": object()}, TypeError, r"metadata\['when'\] is a object"),
        ({"kind": "K", "table": {1: "one"}}, TypeError, "keys must be strings"),
        ({"params": {}}, ValueError, r"\['kind'\] must be a non-empty string"),
        ({"kind": ""}, ValueError, r"\['kind'\] must be a non-empty string"),
        ({"kind": "K", "format_version": 3}, ValueError, "reserved"),
        ([("kind", "K")], TypeError, "metadata must be a mapping"),
    ],
)
def test_unstorable_metadata_is_refused_before_writing(tmp_path, metadata, error, message):
    with pytest.raises(error, match=message):
        write_operator(tmp_path / "op.safetensors", {"t": torch.zeros(1)}, metadata)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        ({"t": [1.0]}, TypeError, r"tensors\['t'\] must be a torch.Tensor"),
        ({"t": torch.zeros(1, dtype=torch.complex64)}, TypeError, "supported dtypes"),
        ({"t": torch.eye(2).to_sparse()}, TypeError, "dense"),
        ({"": torch.zeros(1)}, ValueError, "non-empty strings"),
        ({"__metadata__": torch.zeros(1)}, ValueError, "__metadata__"),
        ([torch.zeros(1)], TypeError, "tensors must be a mapping"),
    ],
)
def test_unstorable_tensors_are_refused_before_writing(tmp_path, tensors, error, message):
    with pytest.raises(error, match=message):
        write_operator(tmp_path / "op.safetensors", tensors, {"kind": "K"})
    assert os.listdir(tmp_path) == []
