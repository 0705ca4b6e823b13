"""Image files the tests need that Pillow cannot write."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png_rgb16(values: np.ndarray) -> bytes:
    """A 48-bit RGB PNG from a [height, width, 3] uint16 array: IHDR, one IDAT, IEND."""
    height, width, _ = values.shape
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
