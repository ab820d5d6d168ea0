"""The workflow's text inputs (chunks, queries, pairs) are UTF-8, with or without a BOM.

A UTF-8 byte-order mark (Windows PowerShell 5's ``Set-Content -Encoding utf8``
writes one) is dropped. A file in UTF-16 or UTF-32 (what PowerShell 5's ``>``
and ``Out-File`` write) is refused with its encoding named and a command that
converts it. Plain Python: the preflight rule reads these files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from embedflow.errors import InputError

UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: UTF-32LE's mark begins with UTF-16LE's.
_MARKS = (
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\xfe\xff", "UTF-16BE"),
    (b"\xff\xfe", "UTF-16LE"),
)
# Without a mark: JSON begins with an ASCII character, so its zero bytes give the width away.
_ZERO_PATTERNS = (
    ((True, True, True, False), "UTF-32BE"),
    ((False, True, True, True), "UTF-32LE"),
    ((True, False), "UTF-16BE"),
    ((False, True), "UTF-16LE"),
)
_NAMES = {
    "UTF-32BE": "UTF-32 big-endian",
    "UTF-32LE": "UTF-32 little-endian",
    "UTF-16BE": "UTF-16 big-endian",
    "UTF-16LE": "UTF-16 little-endian",
}


def wide_encoding(head: bytes) -> tuple[str, bool] | None:
    """(iconv name, has a byte-order mark) of a UTF-16/32 file from its first bytes, else None."""
    for mark, name in _MARKS:
        if head.startswith(mark):
            return name, True
    zeros = tuple(byte == 0 for byte in head[:4])
    for pattern, name in _ZERO_PATTERNS:
        if len(zeros) >= len(pattern) and zeros[: len(pattern)] == pattern:
            return name, False
    return None


def bom_length(path: str | Path) -> int:
    """Bytes to skip at the start of a UTF-8 file (3 with a BOM); refuses UTF-16 and UTF-32."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(UTF8_BOM):
        return len(UTF8_BOM)
    found = wide_encoding(head)
    if found:
        raise InputError(wide_encoding_message(path, *found))
    return 0


def wide_encoding_message(path: str | Path, name: str, marked: bool) -> str:
    source = Path(path)
    converted = source.with_name(f"{source.stem}.utf8{source.suffix}")
    mark = "with" if marked else "without"
    return (
        f"{path}: the file is {_NAMES[name]} ({mark} a byte-order mark), not UTF-8; convert it, "
        f"e.g. `iconv -f {name} -t UTF-8 {path} > {converted}` or, in PowerShell, "
        f"`Get-Content {path} | Set-Content -Encoding utf8 {converted}`, and point the config at "
        f"{converted.name}"
    )


def decode_line(raw: bytes, path: str | Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}, line {number}: not valid UTF-8 (byte {raw[error.start]:#04x} at offset "
            f"{error.start} of the line)"
        ) from None


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 (BOM or not) line-oriented file."""
    skip = bom_length(path)
    with open(path, "rb") as handle:
        handle.seek(skip)
        for number, raw in enumerate(handle, start=1):
            yield number, decode_line(raw, path, number)
