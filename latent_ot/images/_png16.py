"""16-bit colour PNG files, which PIL reads and writes only as 8-bit.

PIL has no 16-bit colour mode: it decodes a 16-bit RGB(A) PNG to 8 bits per channel, keeping
the high byte of each value. Its decoder can keep the low byte instead: the same file decoded
with the raw mode ``RGB;16L`` (the layout of little-endian values) takes the second byte of
each big-endian value, after the same unfiltering. The two decodes give the 16-bit values
exactly (:class:`SixteenBitColour`), through PIL's own decoder (interlacing and every PNG
filter included). Writing (:func:`png16_bytes`) builds the file from its chunks (PNG
specification, ISO/IEC 15948): ``IHDR``, ``iCCP`` and ``eXIf`` when given, ``IDAT`` holding
rows filtered with the "Sub" filter and deflated by zlib, ``IEND``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ._photo import upright

__all__ = ["SixteenBitColour", "png16_bytes", "read_sixteen_bit_colour"]

# PIL's raw mode of a 16-bit colour PNG -> the raw mode taking the low bytes instead.
_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {3: 2, 4: 6}  # channels -> PNG colour type: truecolour, truecolour with alpha


class SixteenBitColour(NamedTuple):
    """A 16-bit colour image as two PIL images: the high and the low bytes of its values."""

    high: Image.Image
    low: Image.Image

    def array(self) -> np.ndarray:
        """The ``H x W x C`` uint16 values."""
        high = np.asarray(self.high).astype(np.uint16)
        return (high << 8) | np.asarray(self.low)

    def upright(self) -> SixteenBitColour:
        """Both halves turned as the EXIF orientation of the file says."""
        return SixteenBitColour(upright(self.high), upright(self.low))


def read_sixteen_bit_colour(path: Path, opened: Image.Image) -> SixteenBitColour | None:
    """The values of ``path`` if ``opened`` (that file, opened, not loaded) is a 16-bit
    colour PNG; None for any other file."""
    tile = opened.tile[0] if opened.format == "PNG" and len(opened.tile) == 1 else None
    raw_mode = None if tile is None else tile.args
    if raw_mode not in _LOW_BYTES:
        return None
    opened.load()
    high = opened.copy()
    with Image.open(path) as again:
        again.tile = [again.tile[0]._replace(args=_LOW_BYTES[raw_mode])]
        again.load()
        low = again.copy()
    return SixteenBitColour(high, low)


def png16_bytes(
    values: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """The PNG file of ``H x W x 3`` or ``H x W x 4`` uint16 ``values``.

    Examples
    --------
    >>> import tempfile
    >>> values = np.full((2, 3, 3), 0x1234, dtype=np.uint16)
    >>> path = Path(tempfile.mkdtemp()) / "deep.png"
    >>> _ = path.write_bytes(png16_bytes(values))
    >>> with Image.open(path) as opened:
    ...     hex(read_sixteen_bit_colour(path, opened).array()[0, 0, 0])
    '0x1234'
    """
    height, width, channels = values.shape
    rows = values.astype(">u2").reshape(height, width * channels).view(np.uint8)
    pixel_bytes = 2 * channels
    # "Sub" filter: each byte minus the same byte of the pixel on its left, modulo 256.
    filtered = rows.copy()
    filtered[:, pixel_bytes:] -= rows[:, :-pixel_bytes]
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, _COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    chunks += [_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)), _chunk(b"IEND", b"")]
    return _SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
