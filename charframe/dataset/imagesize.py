"""Image width and height from file headers (PNG, JPEG, WebP), without decoding pixels.

The dataset TOML needs the size of every image; decoding 20,000 images to learn two numbers is
what made the original tool slow. Like sd-scripts' bucketing, the stored size counts (EXIF
orientation is not applied). The format is sniffed from the bytes, not from the extension.

`check_pixels` refuses, from the header alone, an image too large to decode safely (a 30000×30000 PNG, or a
header that lies about a small file): every decode of a file the user may have placed asks it first, with the
same limit as the trainer's decoder (Pillow's decompression-bomb limit), so clean, pick and export refuse what
training would refuse, before a decoder allocates gigabytes.
"""

from __future__ import annotations

import os
import struct

from charframe.errors import CharframeError

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_HEAD = 64  # enough for PNG and WebP; JPEG walks its segments from here
_JPEG_CHUNK = 65536
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG), CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])


class _Bad(Exception):
    """A header problem, turned into a CharframeError that names the file."""


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG or WebP file; a CharframeError names unreadable files."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(_HEAD)
            if head.startswith(_PNG_SIG):
                size = _png(head)
            elif head[:2] == b"\xff\xd8":
                size = _jpeg(f, head)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                size = _webp(head)
            else:
                raise _Bad(f"not a PNG, JPEG or WebP file (starts with {head[:8]!r})")
    except _Bad as e:
        raise CharframeError(f"{os.fspath(path)}: cannot read the image size: {e}; re-export the image or remove it") from None
    except OSError as e:
        raise CharframeError(f"{os.fspath(path)}: cannot read the file ({e.strerror or e})") from None
    if size[0] <= 0 or size[1] <= 0:
        raise CharframeError(f"{os.fspath(path)}: the header says {size[0]}x{size[1]}; re-export the image or remove it")
    return size


def _png(head: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise _Bad("truncated or corrupt PNG header")
    return struct.unpack(">II", head[16:24])


def _webp(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        if head[23:26] != b"\x9d\x01\x2a":
            raise _Bad("corrupt WebP (VP8) frame header")
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        if head[20] != 0x2F:
            raise _Bad("corrupt WebP (VP8L) header")
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise _Bad("truncated WebP header or unknown WebP chunk")


def _jpeg(f, head: bytes) -> tuple[int, int]:
    """Walk the JPEG segments from the SOI marker to the first start-of-frame."""
    buf, base, pos = head, 0, 2  # buf holds file bytes [base, base + len(buf))

    def need(n: int) -> bytes:
        nonlocal buf, base
        if pos + n > base + len(buf):
            f.seek(pos)
            buf, base = f.read(max(n, _JPEG_CHUNK)), pos
            if len(buf) < n:
                raise _Bad("truncated JPEG (no frame header before the end of the file)")
        return buf[pos - base : pos - base + n]

    while True:
        if need(1) != b"\xff":
            raise _Bad(f"corrupt JPEG (no marker at byte {pos})")
        while need(1) == b"\xff":  # fill bytes
            pos += 1
        marker = need(1)[0]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _Bad("corrupt JPEG (image data before a frame header)")
        (length,) = struct.unpack(">H", need(2))
        if length < 2:
            raise _Bad(f"corrupt JPEG (segment length {length} at byte {pos})")
        if marker in _SOF:
            seg = need(7)
            h, w = struct.unpack(">HH", seg[3:7])
            return w, h
        pos += length


def decode_limit() -> int:
    """The most pixels charframe decodes: Pillow's decompression-bomb limit (2 × `Image.MAX_IMAGE_PIXELS`,
    about 179 megapixels), the one the trainer's image check applies; 0 = no limit (Pillow's set to None)."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else 0


def check_pixels(path: str | os.PathLike) -> tuple[int, int] | None:
    """The header's (width, height) when it is safe to decode; a header over `decode_limit` is one error naming
    the file. None when the header is not one this module reads (the decoder then decides)."""
    try:
        w, h = image_size(path)
    except CharframeError:
        return None
    limit = decode_limit()
    if limit and w * h > limit:
        raise CharframeError(f"{os.fspath(path)}: its header says {w}x{h} ({w * h / 1e6:.0f} megapixels), more than "
                             f"charframe decodes ({limit / 1e6:.0f}); a damaged or hostile file: delete or replace it")
    return w, h
