import struct
from pathlib import Path

import pytest
from PIL import Image

from charframe.errors import CharframeError
from charframe.dataset.imagesize import image_size

SIZES = [(1, 1), (37, 513), (768, 512), (1024, 1536)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "ext, kwargs",
    [
        ("png", {}),
        ("jpg", {}),
        ("jpg", {"progressive": True}),
        ("webp", {"lossless": False}),
        ("webp", {"lossless": True}),
    ],
)
def test_sizes_match_pillow(tmp_path: Path, ext: str, kwargs: dict, size: tuple[int, int]) -> None:
    p = tmp_path / f"a.{ext}"
    Image.new("RGB", size, (200, 30, 30)).save(p, **kwargs)
    assert image_size(p) == size == Image.open(p).size


def test_webp_with_alpha_uses_vp8x(tmp_path: Path) -> None:
    p = tmp_path / "a.webp"
    Image.new("RGBA", (300, 200), (0, 0, 0, 0)).save(p, lossless=False)
    assert p.read_bytes()[12:16] == b"VP8X"
    assert image_size(p) == (300, 200)


def test_jpeg_with_big_exif_segment_before_the_frame(tmp_path: Path) -> None:
    p = tmp_path / "a.jpeg"
    Image.new("RGB", (640, 480)).save(p, exif=b"Exif\x00\x00" + b"\x00" * 65000, icc_profile=b"\x01" * 60000)
    assert p.stat().st_size > 125000
    assert image_size(p) == (640, 480)


def test_format_is_sniffed_not_taken_from_the_extension(tmp_path: Path) -> None:
    p = tmp_path / "really_a_jpeg.png"
    Image.new("RGB", (64, 32)).save(p, format="JPEG")
    assert image_size(p) == (64, 32)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a PNG, JPEG or WebP"),
        (b"GIF89a" + b"\x00" * 40, "not a PNG, JPEG or WebP"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated JPEG"),
        (b"\xff\xd8\x00\x00\x00", "corrupt JPEG"),
        (b"\xff\xd8\xff\xda\x00\x08", "corrupt JPEG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "truncated WebP"),
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 0, 5), "0x5"),
    ],
)
def test_corrupt_files_are_named(tmp_path: Path, data: bytes, message: str) -> None:
    p = tmp_path / "broken f00.png"
    p.write_bytes(data)
    with pytest.raises(CharframeError, match=message) as info:
        image_size(p)
    assert str(p) in str(info.value)


def test_truncated_real_png(tmp_path: Path) -> None:
    p = tmp_path / "f00.png"
    Image.new("RGB", (8, 8)).save(p)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(CharframeError, match="f00.png.*truncated"):
        image_size(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match="nope.png"):
        image_size(tmp_path / "nope.png")
