"""The chunks file: reading, validating and selecting chunks (docs/design.md, "The chunks file").

A chunks file is a JSON array of objects (``.json``) or one object per line
(``.jsonl`` / ``.ndjson``). ``validate_chunks`` reads it once, before any
model loads, and raises an ``InputError`` naming the file, the chunk and what
is wrong. JSON Lines files are streamed; only the ids are kept in memory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from embedflow.errors import ConfigError, InputError
from embedflow.hashing import sha256_file

TEXT_FIELDS = ("content", "summary")
SAMPLE_MODES = ("head", "random")
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")

T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    position: int  # 0-based position in the file
    id: str  # ids are stored as text
    text: str  # the configured text field, exactly as it will be embedded
    record: dict


@dataclass(frozen=True)
class CorpusSummary:
    path: str
    count: int
    sha256: str


@dataclass(frozen=True)
class _Place:
    """Where a chunk sits in its file, for error messages."""

    path: str
    position: int
    line: int | None = None

    def describe(self, chunk_id: str | None = None) -> str:
        where = f"{self.path}, line {self.line}" if self.line else self.path
        label = f"chunk #{self.position + 1}"
        if chunk_id is not None:
            label += f" (id {_quote(chunk_id)})"
        return f"{where}: {label}"


def _quote(value: str, limit: int = 80) -> str:
    text = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(text)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        float: "a float",
        list: "a list",
        dict: "an object",
        int: "an integer",
        str: "a string",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def is_json_lines(path: str | Path) -> bool:
    return Path(path).suffix.lower() in JSON_LINES_SUFFIXES


def _decode(raw: bytes, path: str, line: int | None = None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = f"offset {error.start} of the line" if line else f"byte offset {error.start}"
        if line is None:
            line = raw[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path}, line {line}: not valid UTF-8 (byte {raw[error.start]:#04x} at {offset})"
        ) from None


def _iter_json_array(path: str) -> Iterator[tuple[_Place, object]]:
    raw = Path(path).read_bytes()
    text = _decode(raw, path)
    if not text.strip():
        raise InputError(f"{path}: the file is empty; expected a JSON array of chunk objects")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, list):
        raise InputError(
            f"{path}: the top level is {_type_name(document)}, expected a JSON array of chunk "
            "objects (or use a .jsonl file with one object per line)"
        )
    for position, record in enumerate(document):
        yield _Place(path, position), record


def _iter_json_lines(path: str) -> Iterator[tuple[_Place, object]]:
    position = 0
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, line_number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"{path}, line {line_number}: not valid JSON at column {error.colno}: {error.msg}"
                ) from None
            yield _Place(path, position, line_number), record
            position += 1


def _iter_raw(path: str | Path) -> Iterator[tuple[_Place, object]]:
    path = str(path)
    if not Path(path).is_file():
        raise InputError(f"{path}: the chunks file does not exist")
    return _iter_json_lines(path) if is_json_lines(path) else _iter_json_array(path)


def _chunk_id(place: _Place, record: dict) -> str:
    if "id" not in record:
        raise InputError(f"{place.describe()}: has no 'id'")
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(
            f"{place.describe()}: 'id' must be a string or an integer, got {_type_name(value)}"
            f"{'' if value is None else ' ' + _quote(json.dumps(value), 40)}"
        )
    chunk_id = str(value)
    if not chunk_id.strip():
        raise InputError(f"{place.describe()}: 'id' is empty")
    return chunk_id


def _check_text(place: _Place, chunk_id: str, record: dict, field: str, required: bool) -> None:
    label = place.describe(chunk_id)
    if field not in record or record[field] is None:
        if required:
            raise InputError(f"{label}: has no '{field}'" + _configured_note(field))
        return
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"{label}: '{field}' must be a string, got {_type_name(value)}")
    if required and not value.strip():
        kind = "empty" if not value else "only whitespace"
        raise InputError(f"{label}: '{field}' is {kind}" + _configured_note(field))


def _configured_note(field: str) -> str:
    if field == "content":
        return ""
    return f" (it is the configured text field: text_field: {field})"


def _check_record(place: _Place, record: object, text_field: str) -> str:
    if not isinstance(record, dict):
        raise InputError(
            f"{place.describe()}: is {_type_name(record)}, expected an object with 'id' and 'content'"
        )
    chunk_id = _chunk_id(place, record)
    _check_text(place, chunk_id, record, "content", required=True)
    _check_text(place, chunk_id, record, "summary", required=text_field == "summary")
    return chunk_id


def _check_text_field(text_field: str) -> None:
    if text_field not in TEXT_FIELDS:
        raise ConfigError(f"text_field must be one of {TEXT_FIELDS}, got {text_field!r}")


def validate_chunks(path: str | Path, text_field: str = "content") -> CorpusSummary:
    """Read the whole file once and raise ``InputError`` at the first bad chunk."""
    _check_text_field(text_field)
    first_position: dict[str, int] = {}
    for place, record in _iter_raw(path):
        chunk_id = _check_record(place, record, text_field)
        earlier = first_position.setdefault(chunk_id, place.position)
        if earlier != place.position:
            raise InputError(
                f"{place.path}: duplicate id {_quote(chunk_id)} at chunk #{earlier + 1} and "
                f"chunk #{place.position + 1} (ids are compared as text)"
            )
    if not first_position:
        raise InputError(f"{path}: contains no chunks")
    return CorpusSummary(path=str(path), count=len(first_position), sha256=sha256_file(path))


def select_positions(
    count: int, max_chunks: int | None, sample: str = "head", seed: int = 0
) -> list[int] | None:
    """Positions of the chunks to embed, in input order; None means all of them.

    Test mode (``max_chunks``) takes the first chunks (``head``) or a seeded
    sample (``random``); both keep the input order.
    """
    if sample not in SAMPLE_MODES:
        raise ConfigError(f"test_mode.sample must be one of {SAMPLE_MODES}, got {sample!r}")
    if max_chunks is None or max_chunks >= count:
        return None
    if max_chunks < 1:
        raise ConfigError(f"test_mode.max_chunks must be at least 1, got {max_chunks}")
    if sample == "head":
        return list(range(max_chunks))
    return sorted(random.Random(seed).sample(range(count), max_chunks))


def iter_chunks(
    path: str | Path, text_field: str = "content", positions: Iterable[int] | None = None
) -> Iterator[Chunk]:
    """Yield the selected chunks in input order. Call ``validate_chunks`` first."""
    _check_text_field(text_field)
    wanted = None if positions is None else set(positions)
    for place, record in _iter_raw(path):
        if wanted is not None and place.position not in wanted:
            continue
        yield Chunk(
            position=place.position,
            id=str(record["id"]),
            text=record[text_field],
            record=record,
        )


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def find_texts(path: str | Path, text_field: str, ids: Iterable[str]) -> dict[str, str]:
    """The texts of a few chunks by id (streamed; stops once all are found)."""
    wanted = set(ids)
    found: dict[str, str] = {}
    if not wanted:
        return found
    for chunk in iter_chunks(path, text_field):
        if chunk.id in wanted and chunk.id not in found:
            found[chunk.id] = chunk.text
            if len(found) == len(wanted):
                break
    return found
