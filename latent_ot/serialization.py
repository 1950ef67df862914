"""Safe operator files: tensors in safetensors, parameters and provenance in checksummed JSON.

A fitted operator is something people share and download, so loading one must never run code:
this module never uses :mod:`pickle` nor :func:`torch.load`. An operator file is one standard
``.safetensors`` file (readable by any safetensors tool):

- the tensors, stored by safetensors (CPU, contiguous, dtype kept);
- the header's ``__metadata__`` holds a single key, ``"latent_ot"``, whose value is one JSON
  document in canonical form (sorted keys, no whitespace, ASCII)::

      {"format": "latent-ot operator", "format_version": 1, "latent_ot_version": "...",
       "metadata": {"kind": "LatentOTTransformer", ...the caller's metadata...},
       "tensors": {"name": {"dtype": "float64", "shape": [3, 3], "sha256": "..."}, ...},
       "sha256": "<sha256 of the canonical JSON of this document without this key>"}

Every format version keeps this envelope (the ``"latent_ot"`` key, ``"format"``,
``"format_version"`` and ``"sha256"``), so any version can tell a newer file from a damaged one.

:func:`read_operator` accepts a file only if every byte is accounted for: the safetensors
header must be compact JSON (padding aside), the document canonical and matching its checksum,
and every tensor must match its manifest entry (dtype, shape, sha256 of its bytes). Any
truncation, changed byte or foreign file raises :class:`OperatorFileError`. Same inputs give
the same bytes (no timestamps), and :func:`write_operator` replaces the target atomically.
A file whose size is not what its header accounts for is refused before its data is read.

Files of the kinds latent-ot writes (operators, natural priors) are then checked for what
they mean (:mod:`latent_ot.file_contents`): the checksums above only show that the bytes are
those some writer wrote. ``read_operator(path, sha256=...)`` pins a file to the sha256 of all
its bytes, for shared files (see the "Security and trust" page of the documentation).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ._atomic import atomic_file
from .exceptions import OperatorFileError
from .file_contents import ContentError, check_contents
from .provenance import check_sha256

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "OperatorFileError",
    "read_operator",
    "write_operator",
]

#: The version of the file layout this module writes; it reads this version and older ones.
FORMAT_VERSION: int = 1

#: Headers declaring more bytes than this are refused before anything is allocated (the limit
#: safetensors itself applies).
MAX_HEADER_BYTES: int = 100 * 1024 * 1024

_FORMAT_NAME = "latent-ot operator"
_METADATA_KEY = "latent_ot"
# Keys read_operator adds to the metadata it returns; the caller's metadata cannot use them.
_RESERVED_KEYS = ("format_version", "latent_ot_version")
# Kept to dtypes every safetensors release since 0.4 reads, so files stay portable.
_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
    )
}


class _Invalid(Exception):
    """What is wrong with a file; :func:`read_operator` turns it into an OperatorFileError."""


# --------------------------------------------------------------------------------------------
# Writing


def write_operator(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
) -> None:
    """Write tensors and metadata to an operator file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (``.safetensors`` is the natural suffix). Its directory must exist.
        A previous file there is replaced only once the new one is complete on disk: an
        interrupted write leaves it untouched and no temporary file behind.
    tensors : mapping of str to torch.Tensor
        Dense tensors of a boolean, integer or floating dtype, on any device; CPU copies are
        stored with their dtype and shape. Names are non-empty strings.
    metadata : mapping of str to JSON-like values
        Must hold ``"kind"``, a non-empty string naming what the file holds (e.g. the
        estimator class), checked by ``read_operator(..., expected_kind=...)``. Values are
        None, bool, int, finite float, str, lists/tuples and mappings with str keys of those
        (tuples come back as lists). The keys ``"format_version"`` and ``"latent_ot_version"``
        are reserved.

    Raises
    ------
    TypeError, ValueError
        For tensors or metadata that cannot be stored; nothing is written.
    IsADirectoryError, FileNotFoundError
        If ``path`` is a directory, or its directory does not exist.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.safetensors")
    >>> write_operator(path, {"mean": torch.zeros(3)}, {"kind": "Demo", "alpha": 0.5})
    >>> tensors, metadata = read_operator(path, expected_kind="Demo")
    >>> tensors["mean"], metadata["alpha"]
    (tensor([0., 0., 0.]), 0.5)
    """
    target = _writable_target(path)
    stored = {_check_tensor_name(name): _cpu_copy(name, tensor) for name, tensor in _items(tensors)}
    document = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "latent_ot_version": _package_version(),
        "metadata": _check_metadata(metadata),
        "tensors": {name: _manifest_entry(tensor) for name, tensor in stored.items()},
    }
    document["sha256"] = _document_sha256(document)
    data = safetensors.torch.save(stored, metadata={_METADATA_KEY: _canonical_json(document)})
    _write_atomically(target, data)


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _writable_target(path: Any) -> Path:
    target = _as_path(path)
    if target.is_dir():
        raise IsADirectoryError(f"path {str(target)!r} is a directory; expected a file path")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: directory {str(target.parent)!r} does not exist"
        )
    return target


def _items(tensors: Any) -> list[tuple[Any, Any]]:
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"tensors must be a mapping of names to tensors, got {type(tensors).__name__}"
        )
    return list(tensors.items())


def _check_tensor_name(name: Any) -> str:
    # safetensors reserves "__metadata__" for the header's metadata (and would write it anyway).
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise ValueError(
            f"tensor names must be non-empty strings other than '__metadata__', got {name!r}"
        )
    return name


def _cpu_copy(name: str, tensor: Any) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensors[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise TypeError(f"tensors[{name!r}] must be a dense tensor, got layout {tensor.layout}")
    if _dtype_name(tensor.dtype) not in _DTYPES:
        raise TypeError(
            f"tensors[{name!r}] has dtype {tensor.dtype}; supported dtypes: {', '.join(_DTYPES)}"
        )
    # A private contiguous copy: safetensors refuses views and tensors sharing memory.
    return tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    kind = metadata.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(
            f"metadata['kind'] must be a non-empty string naming the operator, got {kind!r}"
        )
    reserved = [key for key in _RESERVED_KEYS if key in metadata]
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved: read_operator adds them")
    return _plain_json(metadata, "metadata")


def _plain_json(value: Any, where: str) -> Any:
    """A copy of ``value`` made of plain JSON types, or a TypeError/ValueError naming ``where``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}: JSON cannot hold non-finite numbers")
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where} has key {key!r}; keys must be strings")
        return {key: _plain_json(item, f"{where}[{key!r}]") for key, item in value.items()}
    raise TypeError(
        f"{where} is a {type(value).__name__}; expected None, bool, int, float, str, "
        "list, tuple or a mapping with str keys"
    )


def _package_version() -> str:
    # Imported at call time: the package imports the estimators, which import this module.
    from . import __version__

    return __version__


def _write_atomically(target: Path, data: bytes) -> None:
    # The one atomic write of the package: usual umask permissions, no partial file left.
    with atomic_file(target) as file:
        file.write(data)


# --------------------------------------------------------------------------------------------
# Reading


def read_operator(
    path: str | os.PathLike[str],
    *,
    expected_kind: str | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and fully validate an operator file written by :func:`write_operator`.

    Nothing in the file is executed: tensors are decoded by safetensors and the rest is JSON.
    Files of the kinds latent-ot writes are also checked for what their contents mean (see
    :mod:`latent_ot.file_contents`).

    Parameters
    ----------
    path : str or os.PathLike
        The operator file.
    expected_kind : str, optional
        If given, the file's ``metadata["kind"]`` must equal it.
    sha256 : str, optional
        The sha256 of the whole file (64 hexadecimal digits, optionally led by ``"sha256:"``)
        as its author published it (:func:`~latent_ot.provenance.file_sha256`, ``sha256sum``):
        the file is refused
        unless its bytes have exactly this digest. Unlike the checksums inside the file,
        which anyone rewriting the file recomputes, this pins the file to the one published.

    Returns
    -------
    tensors : dict of str to torch.Tensor
        CPU tensors, bitwise equal to those written.
    metadata : dict
        The metadata written, plus ``"format_version"`` (int) and ``"latent_ot_version"``
        (str) of the writer.

    Raises
    ------
    OperatorFileError
        If the file is not a latent-ot operator file, is truncated, altered or corrupted, was
        written by a newer format version, holds another kind than ``expected_kind``, has
        contents that do not mean what its kind requires, or does not have the digest
        ``sha256``. The message names the path and the problem; the low-level error is
        chained.
    FileNotFoundError
        If the file does not exist.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.safetensors")
    >>> write_operator(path, {"cov": torch.eye(2, dtype=torch.float64)}, {"kind": "Demo"})
    >>> from latent_ot.provenance import file_sha256
    >>> tensors, metadata = read_operator(path, sha256=file_sha256(path))
    >>> tensors["cov"].dtype, metadata["kind"], metadata["format_version"]
    (torch.float64, 'Demo', 1)
    """
    source = _as_path(path)
    if expected_kind is not None and not isinstance(expected_kind, str):
        raise TypeError(f"expected_kind must be a str or None, got {type(expected_kind).__name__}")
    pinned = None if sha256 is None else check_sha256(sha256)
    try:
        data, header = _read_regular_file(source)
        if pinned is not None:
            _check_pinned_digest(data, pinned)
        document = _verified_document(header)
        _check_format_version(document)
        _check_document_structure(document)
        tensors = _decode_tensors(data)
        _check_tensors(tensors, document["tensors"])
        _check_kind(document["metadata"]["kind"], expected_kind)
        check_contents(tensors, document["metadata"])
    except ContentError as problem:
        raise OperatorFileError(f"cannot load operator file {str(source)!r}: {problem}") from None
    except _Invalid as problem:
        raise OperatorFileError(f"cannot load operator file {str(source)!r}: {problem}") from (
            problem.__cause__
        )
    metadata = dict(document["metadata"])
    metadata["format_version"] = document["format_version"]
    metadata["latent_ot_version"] = document["latent_ot_version"]
    return tensors, metadata


def _check_pinned_digest(data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise _Invalid(
            f"its sha256 is {actual}, expected {expected}: it is not the file that was "
            "published (changed, damaged or replaced)"
        )


def _read_regular_file(source: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its safetensors header, refused by size before the data is read."""
    # Checked before opening: opening a FIFO would block, a directory fails per platform.
    if source.is_dir():
        raise _Invalid("it is a directory, not an operator file")
    if source.exists() and not source.is_file():
        raise _Invalid("it is not a regular file")
    with open(source, "rb") as file:  # a missing file: FileNotFoundError naming the path
        size = os.fstat(file.fileno()).st_size
        start = file.read(9)
        header_size = _header_size(start, size)
        header = _parse_header(start[8:] + file.read(header_size - 1))
        expected = 8 + header_size + _data_size(header)
        if size != expected:
            raise _Invalid(
                f"it is {size} bytes long, its header accounts for {expected}: "
                + (
                    "truncated"
                    if size < expected
                    else "not a latent-ot operator file, or bytes were appended"
                )
            )
        file.seek(0)
        return file.read(), header


def _header_size(start: bytes, size: int) -> int:
    # Layout: 8-byte little-endian header length, the JSON header, then the tensor bytes.
    if len(start) < 9:
        raise _Invalid(f"it is {size} bytes long: truncated, or not a latent-ot operator file")
    if start[8:9] != b"{":
        raise _Invalid("not a latent-ot operator file (no safetensors header)")
    header_size = int.from_bytes(start[:8], "little")
    if header_size > MAX_HEADER_BYTES:
        raise _Invalid(
            f"its header claims {header_size} bytes (limit {MAX_HEADER_BYTES}): "
            "not a latent-ot operator file, or corrupted"
        )
    if 8 + header_size > size:
        raise _Invalid(f"truncated: its header claims {header_size} bytes, {size - 8} follow")
    return header_size


def _parse_header(raw: bytes) -> dict[str, Any]:
    """The safetensors header, checked to be exactly as safetensors writes it."""
    header = _load_json(raw, "safetensors header")
    if not isinstance(header, dict):
        raise _Invalid("its safetensors header is not a JSON object (corrupted)")
    # safetensors writes compact JSON padded with spaces. Demanding exactly that catches
    # changes JSON would shrug off, such as a padding space turned into a newline.
    if raw.rstrip(b" ") != json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode():
        raise _Invalid("its safetensors header was altered (it is not as safetensors writes it)")
    return header


def _data_size(header: dict[str, Any]) -> int:
    """The bytes of tensor data the header declares: where its last tensor ends."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(offset) is int and offset >= 0 for offset in offsets)
        ):
            raise _Invalid(f"its safetensors header has no valid data offsets for {name!r}")
        end = max(end, offsets[1])
    return end


def _load_json(text: str | bytes, what: str) -> Any:
    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise _Invalid(f"its {what} is not valid JSON (corrupted)") from error


def _verified_document(header: dict[str, Any]) -> dict[str, Any]:
    """The latent-ot document of the header, checked against its own checksum."""
    header_metadata = header.get("__metadata__")
    if not isinstance(header_metadata, dict) or _METADATA_KEY not in header_metadata:
        raise _Invalid(
            f"not a latent-ot operator file (its safetensors header has no {_METADATA_KEY!r} "
            "metadata), or its header is corrupted"
        )
    text = header_metadata[_METADATA_KEY]
    if not isinstance(text, str):
        raise _Invalid(f"its {_METADATA_KEY!r} metadata is not a string (corrupted)")
    document = _load_json(text, "latent-ot metadata")
    if not isinstance(document, dict) or not isinstance(document.get("sha256"), str):
        raise _Invalid("its latent-ot metadata has no checksum (corrupted)")
    try:
        canonical = _canonical_json(document)
    except ValueError as error:  # e.g. a number too large for a float
        raise _Invalid("its latent-ot metadata is not canonical JSON (altered)") from error
    # The checksum covers the parsed document; canonical form covers the exact bytes.
    if text != canonical:
        raise _Invalid("its latent-ot metadata is not canonical JSON (altered)")
    if document["sha256"] != _document_sha256(document):
        raise _Invalid("checksum mismatch of its latent-ot metadata (corrupted or edited)")
    return document


def _check_format_version(document: dict[str, Any]) -> None:
    if document.get("format") != _FORMAT_NAME:
        raise _Invalid(f"not a latent-ot operator file (format {document.get('format')!r})")
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise _Invalid(f"its format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise _Invalid(
            f"written by a newer latent-ot (format {version}, latent-ot "
            f"{document.get('latent_ot_version')}); this latent-ot {_package_version()} reads "
            f"formats up to {FORMAT_VERSION}: upgrade latent-ot"
        )


def _check_document_structure(document: dict[str, Any]) -> None:
    # The checksum shows the document is intact, not that it was written by write_operator.
    if not isinstance(document.get("latent_ot_version"), str):
        raise _Invalid("its latent_ot_version is missing")
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("kind"), str):
        raise _Invalid("its metadata has no 'kind'")
    manifest = document.get("tensors")
    if not isinstance(manifest, dict) or not all(map(_is_manifest_entry, manifest.values())):
        raise _Invalid("its tensor manifest is malformed")


def _is_manifest_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.keys() == {"dtype", "shape", "sha256"}
        and entry["dtype"] in _DTYPES
        and isinstance(entry["shape"], list)
        and all(type(size) is int and size >= 0 for size in entry["shape"])
        and isinstance(entry["sha256"], str)
    )


def _decode_tensors(data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as error:  # whatever the decoder trips on, the file is at fault
        raise _Invalid("its tensor data is truncated or corrupted") from error


def _check_tensors(tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    missing, unexpected = (
        sorted(manifest.keys() - tensors.keys()),
        sorted(tensors.keys() - manifest.keys()),
    )
    if missing or unexpected:
        raise _Invalid(
            f"its tensors do not match its manifest (missing {missing}, unexpected {unexpected})"
        )
    for name, entry in manifest.items():
        expected = _manifest_entry(tensors[name])
        for field in ("dtype", "shape", "sha256"):
            if expected[field] != entry[field]:
                raise _Invalid(f"{field} mismatch of tensor {name!r} (corrupted or edited)")


def _check_kind(kind: str, expected_kind: str | None) -> None:
    if expected_kind is not None and kind != expected_kind:
        raise _Invalid(f"it holds a {kind}, expected a {expected_kind}")


# --------------------------------------------------------------------------------------------
# Shared by writing and reading


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _manifest_entry(tensor: torch.Tensor) -> dict[str, Any]:
    raw = tensor.reshape(-1).view(torch.uint8).numpy()  # native (little-endian) bytes
    return {
        "dtype": _dtype_name(tensor.dtype),
        "shape": list(tensor.shape),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _document_sha256(document: dict[str, Any]) -> str:
    unsigned = {key: value for key, value in document.items() if key != "sha256"}
    return hashlib.sha256(_canonical_json(unsigned).encode("ascii")).hexdigest()
