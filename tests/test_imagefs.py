"""Files read out of real (gzip, zstd and plain) tar layers, and the metadata parsers."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from d8mirror.errors import InvalidImageMetadataError, LayerReadError
from d8mirror.imagefs import (
    MAX_IMAGE_FILE_BYTES,
    clean_path,
    parse_extra_images_json,
    parse_images_digests,
    parse_version_json,
    read_file_from_layers,
)

Entry = tuple[str, bytes | None]  # (name, content); None content = directory


def make_layer(path: Path, entries: list[Entry], *, compress: bool = True) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def layers(tmp_path: Path, *stack: list[Entry], compress: bool = True) -> list[Path]:
    """Layers bottom → top."""
    return [
        make_layer(tmp_path / f"layer{i}", entries, compress=compress)
        for i, entries in enumerate(stack)
    ]


VERSION = ("version.json", b'{"version": "v1.45.2"}')


# -- lookup semantics ----------------------------------------------------------------------------
@pytest.mark.parametrize("top_first_any", [True, False])
def test_reads_file_from_a_single_layer(tmp_path: Path, top_first_any: bool) -> None:
    paths = layers(tmp_path, [("./etc", None), ("./version.json", VERSION[1])])
    assert read_file_from_layers(paths, "version.json", top_first_any=top_first_any) == VERSION[1]


@pytest.mark.parametrize("top_first_any", [True, False])
def test_absent_file_is_none(tmp_path: Path, top_first_any: bool) -> None:
    paths = layers(tmp_path, [("a.txt", b"a")], [("dir", None), ("dir/version.json", b"{}")])
    assert read_file_from_layers(paths, "version.json", top_first_any=top_first_any) is None


@pytest.mark.parametrize("top_first_any", [True, False])
def test_top_layer_wins(tmp_path: Path, top_first_any: bool) -> None:
    paths = layers(
        tmp_path,
        [("extra_images.json", b"bottom")],
        [("x", b"")],
        [("./extra_images.json", b"top")],
    )
    assert read_file_from_layers(paths, "extra_images.json", top_first_any=top_first_any) == b"top"


def test_whiteout_hides_lower_layers_in_flattened_mode(tmp_path: Path) -> None:
    paths = layers(tmp_path, [VERSION], [(".wh.version.json", b"")])
    assert read_file_from_layers(paths, "version.json", top_first_any=False) is None
    # the "top layer first, any entry" reader of extra_images.json does not apply whiteouts
    assert read_file_from_layers(paths, "version.json", top_first_any=True) == VERSION[1]


def test_opaque_directory_hides_lower_layers(tmp_path: Path) -> None:
    paths = layers(
        tmp_path,
        [("deckhouse", None), ("deckhouse/images_digests.json", b"low")],
        [("deckhouse", None), ("deckhouse/.wh..wh..opq", b"")],
    )
    assert (
        read_file_from_layers(paths, "deckhouse/images_digests.json", top_first_any=False) is None
    )


def test_whiteout_of_a_parent_directory_hides(tmp_path: Path) -> None:
    paths = layers(tmp_path, [("d", None), ("d/f.json", b"low")], [(".wh.d", b"")])
    assert read_file_from_layers(paths, "d/f.json", top_first_any=False) is None


def test_file_in_the_whiteout_layer_itself_is_visible(tmp_path: Path) -> None:
    paths = layers(tmp_path, [VERSION], [(".wh..wh..opq", b""), ("version.json", b"new")])
    assert read_file_from_layers(paths, "version.json", top_first_any=False) == b"new"


def test_whiteout_of_another_file_does_not_hide(tmp_path: Path) -> None:
    paths = layers(tmp_path, [VERSION], [(".wh.other.json", b""), ("sub/.wh..wh..opq", b"")])
    assert read_file_from_layers(paths, "version.json", top_first_any=False) == VERSION[1]


def test_plain_uncompressed_layers(tmp_path: Path) -> None:
    paths = layers(tmp_path, [VERSION], [("x", b"")], compress=False)
    assert read_file_from_layers(paths, "version.json", top_first_any=False) == VERSION[1]


def test_no_layers_means_absent() -> None:
    assert read_file_from_layers([], "version.json", top_first_any=False) is None


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("./version.json", "version.json"),
        ("/a//b/", "a/b"),
        ("a/./b", "a/b"),
        ("../version.json", ""),
        (".", ""),
        ("./", ""),
    ],
)
def test_clean_path(name: str, cleaned: str) -> None:
    assert clean_path(name) == cleaned


# -- broken layers -------------------------------------------------------------------------------
def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("top_first_any", [True, False])
def test_truncated_gzip_layer_is_an_error_not_absent(tmp_path: Path, top_first_any: bool) -> None:
    big = bytes(range(256)) * 2048
    (layer,) = layers(tmp_path, [("noise.bin", big), ("other.json", b"{}")])
    truncate(layer, layer.stat().st_size // 2)
    with pytest.raises(LayerReadError, match="layer0"):
        read_file_from_layers([layer], "extra_images.json", top_first_any=top_first_any)


@pytest.mark.parametrize("keep", [2048, 512 * 10, 512 * 11, 512 * 12])
def test_truncated_plain_layer_is_an_error(tmp_path: Path, keep: int) -> None:
    """Cut inside data, at a header, before and inside the end-of-archive marker."""
    (layer,) = layers(tmp_path, [("noise.bin", b"x" * 4096), ("other", b"y")], compress=False)
    truncate(layer, keep)
    with pytest.raises(LayerReadError):
        read_file_from_layers([layer], "version.json", top_first_any=False)


def test_plain_layer_with_minimal_trailer_is_complete(tmp_path: Path) -> None:
    """Go's archive/tar ends with exactly two zero blocks and no record padding."""
    (layer,) = layers(tmp_path, [("a", b"a" * 100)], compress=False)
    truncate(layer, 512 + 512 + 1024)
    assert read_file_from_layers([layer], "version.json", top_first_any=False) is None


def _zstd_layer(path: Path, entries: list[Entry]) -> Path:
    plain = make_layer(path.with_suffix(".tar"), entries, compress=False)
    path.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    return path


def test_zstd_layers_are_read(tmp_path: Path) -> None:
    """Issue 12.12: a zstd layer (OCI ``tar+zstd``) is read like a gzip one, both semantics."""
    bottom = _zstd_layer(tmp_path / "bottom", [VERSION, ("images_digests.json", b"[]")])
    top = _zstd_layer(tmp_path / "top", [("extra_images.json", b'{"scanner": "v1"}')])
    assert read_file_from_layers([bottom, top], "version.json", top_first_any=False) == VERSION[1]
    assert (
        read_file_from_layers([bottom, top], "extra_images.json", top_first_any=True)
        == b'{"scanner": "v1"}'
    )
    assert read_file_from_layers([bottom, top], "absent.json", top_first_any=False) is None


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_zstd_layer_is_an_error(tmp_path: Path, keep: float) -> None:
    big = bytes(range(256)) * 2048
    layer = _zstd_layer(tmp_path / "layer", [("noise.bin", big), ("other.json", b"{}")])
    truncate(layer, int(layer.stat().st_size * keep))
    with pytest.raises(LayerReadError, match="layer"):
        read_file_from_layers([layer], "version.json", top_first_any=False)


def test_corrupt_lower_layer_fails_even_if_upper_is_fine(tmp_path: Path) -> None:
    bottom, top = layers(tmp_path, [VERSION], [("x", b"")])
    bottom.write_bytes(b"\x1f\x8bgarbage that is not gzip")
    with pytest.raises(LayerReadError):
        read_file_from_layers([bottom, top], "version.json", top_first_any=False)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    paths = layers(tmp_path, [("version.json", b" " * (MAX_IMAGE_FILE_BYTES + 1))])
    with pytest.raises(InvalidImageMetadataError, match="limit"):
        read_file_from_layers(paths, "version.json", top_first_any=False)


# -- parsers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"version": "v1.45.2"}', "v1.45.2"),
        (b'{"version": "1.45.2", "suspend": true}', "v1.45.2"),
        (b'{"version": ""}', None),
        (b"{}", None),
        (b'{"version": null}', None),
        (b"null", None),
        (b' \n{"version": "1.0.0"} trailing {garbage', "v1.0.0"),  # Go's Decoder reads one value
    ],
)
def test_parse_version_json(data: bytes, expected: str | None) -> None:
    assert parse_version_json(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"",
        b"[1]",
        b'"v1"',
        b'{"version": 3}',
        b'{"version": ["v1"]}',
        b"\xff\xfe",
        b'{"version": "1.0/../x"}',
        b'{"version": "\\ud800"}',
    ],
)
def test_parse_version_json_refuses_what_is_no_version(data: bytes) -> None:
    """Go fails to decode these (or to use them as a tag): named errors, warned about."""
    with pytest.raises(InvalidImageMetadataError, match=r"version\.json"):
        parse_version_json(data)


def test_parse_extra_images_json_strings_and_numbers() -> None:
    data = json.dumps(
        {
            "scanner": "v1.2.3",
            "enforcer": "v4.5.6",
            "three": 3,
            "threef": 3.0,
            "round": 3.7,
            "half": 2.5,
            "flag": True,
            "none": None,
            "obj": {},
            "arr": [1],
        }
    ).encode()
    assert parse_extra_images_json(data) == {
        "scanner": "v1.2.3",
        "enforcer": "v4.5.6",
        "three": "3",
        "threef": "3",
        "round": "4",
        "half": "2",
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # %.0f of float64
        (
            b'{"a": 2.5, "b": 3.5, "c": 0.5, "d": 1e3, "e": 12345678901234567890}',
            {"a": "2", "b": "4", "c": "0", "d": "1000", "e": "12345678901234567168"},
        ),
        (b"null", {}),
        (b" null ", {}),
        (b'{"scanner": "v1"} {"more": "v2"} garbage', {"scanner": "v1"}),
    ],
)
def test_parse_extra_images_json_reads_as_go_does(data: bytes, expected: dict[str, str]) -> None:
    assert parse_extra_images_json(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        {"a/b": "v1"},
        {"..": "v1"},
        {"Scanner": "v1"},
        {"x" * 300: "v1"},
        {"scanner": "v1/../x"},
        {"scanner": ".hidden"},
        {"scanner": "t" * 300},
        {"scanner": "-1"},
        {"scanner": -3},
    ],
)
def test_parse_extra_images_json_rejects_bad_entries(data: dict[str, object]) -> None:
    with pytest.raises(InvalidImageMetadataError, match=r"extra_images\.json entry"):
        parse_extra_images_json(json.dumps(data).encode())


@pytest.mark.parametrize("data", [b"{broken", b"[]", b'"s"', b'{"a": NaN}', b"", b'{"a": 1e999}'])
def test_parse_extra_images_json_rejects_malformed_files(data: bytes) -> None:
    with pytest.raises(InvalidImageMetadataError):
        parse_extra_images_json(data)


def test_parse_images_digests() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "0123456789abcdef" * 4
    data = json.dumps(
        {
            "x": {"y": a, "z": b},
            "again": a,
            "upper": "sha256:" + "A" * 64,
            "short": "sha256:abc",
            "text": f"prefix{b}suffix",
        }
    ).encode()
    assert parse_images_digests(data) == [a, b]
    assert parse_images_digests(b"") == []


def test_end_to_end_extra_images_from_layers(tmp_path: Path) -> None:
    paths = layers(
        tmp_path,
        [("extra_images.json", b'{"old": "v0"}')],
        [("./extra_images.json", b'{"scanner":"v1.2.3","enforcer":"v4.5.6"}')],
    )
    data = read_file_from_layers(paths, "extra_images.json", top_first_any=True)
    assert data is not None
    assert parse_extra_images_json(data) == {"scanner": "v1.2.3", "enforcer": "v4.5.6"}
