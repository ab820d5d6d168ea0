"""The chunks file: reading, validating and selecting chunks (docs/design.md, "The chunks file").

A chunks file is a JSON array of objects (``.json``) or one object per line
(``.jsonl`` / ``.ndjson``), in UTF-8 (a BOM is dropped; UTF-16 and UTF-32 are
refused with the command that converts them, see ``text_files``).
``validate_chunks`` reads it once, before any model loads, and accepts
exactly what the chain can store (``storable``). A bad chunk raises a
``ChunkError`` naming the file, the line, the chunk and what is wrong; with
``on_bad_chunk="skip"`` the bad chunks are collected instead (rule preflight
writes them to ``results/rejected/<corpus>.jsonl``) and every later reader
skips their positions. JSON Lines files are streamed; only the ids are kept
in memory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from embedflow.errors import ConfigError, InputError
from embedflow.hashing import sha256_file
from embedflow.storable import metadata_problem, string_problem
from embedflow.text_files import bom_length

TEXT_FIELDS = ("content", "summary")
# Stored in text columns; every other key of a chunk is its metadata (jsonb).
TEXT_COLUMNS = ("id", "content", "summary")
SAMPLE_MODES = ("head", "random")
BAD_CHUNK_POLICIES = ("fail", "skip")
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
    count: int  # chunks accepted
    sha256: str
    rejected: tuple[dict, ...] = field(default=())  # on_bad_chunk "skip": ChunkError.record() of each


@dataclass(frozen=True)
class _Place:
    """Where a chunk sits in its file, for error messages."""

    path: str
    position: int
    line: int | None = None
    offset: int | None = None  # of its line, in a JSON Lines file

    @property
    def place(self) -> int:
        """Where ``records_at`` finds the record again: its line's byte offset in a JSON
        Lines file, its position in a JSON array."""
        return self.position if self.offset is None else self.offset

    def describe(self, chunk_id: str | None = None, label: bool = True) -> str:
        where = f"{self.path}, line {self.line}" if self.line else self.path
        if not label:
            return where
        text = f"chunk #{self.position + 1}"
        if chunk_id is not None:
            text += f" (id {_quote(chunk_id)})"
        return f"{where}: {text}"


class ChunkError(InputError):
    """One chunk cannot be embedded or stored: where it is, its id when known, and why."""

    def __init__(self, place: _Place, reason: str, chunk_id: str | None = None, label: bool = True):
        self.place, self.reason, self.chunk_id = place, reason, chunk_id
        super().__init__(f"{place.describe(chunk_id, label)}: {reason}")

    def record(self) -> dict:
        """Its line in the rejected file."""
        return {"position": self.place.position, "line": self.place.line, "id": self.chunk_id, "reason": self.reason}


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


def _json_problem(error: Exception) -> str:
    """What Python's JSON reader could not read, beyond syntax."""
    if isinstance(error, RecursionError):
        return "nested deeper than the JSON reader allows (about 1,000 levels)"
    if "integer string conversion" in str(error):
        return "an integer with more than 4,300 digits, more than the JSON reader takes"
    return str(error)


# --- reading -----------------------------------------------------------------------


def _iter_json_array(path: str) -> Iterator[tuple[_Place, object]]:
    skip = bom_length(path)
    raw = Path(path).read_bytes()[skip:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path}, line {line}: not valid UTF-8 (byte {raw[error.start]:#04x} at byte offset "
            f"{error.start + skip})"
        ) from None
    if not text.strip():
        raise InputError(f"{path}: the file is empty; expected a JSON array of chunk objects")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except (ValueError, RecursionError) as error:
        raise InputError(f"{path}: not valid JSON: {_json_problem(error)}") from None
    if not isinstance(document, list):
        raise InputError(
            f"{path}: the top level is {_type_name(document)}, expected a JSON array of chunk "
            "objects (or use a .jsonl file with one object per line)"
        )
    for position, record in enumerate(document):
        yield _Place(path, position), record


def _parse_line(line: str, place: _Place) -> object:
    """The line's record, or the ``ChunkError`` that stands for it."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return ChunkError(place, f"not valid JSON at column {error.colno}: {error.msg}", label=False)
    except (ValueError, RecursionError) as error:
        return ChunkError(place, f"not valid JSON: {_json_problem(error)}", label=False)


def _iter_json_lines(path: str) -> Iterator[tuple[_Place, object]]:
    """Each non-blank line; a line that does not parse comes as its ``ChunkError``, so that
    a reader can skip it (on_bad_chunk "skip") or raise it."""
    position = 0
    offset = bom_length(path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line_number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            try:
                line, bad = raw.decode("utf-8"), None
            except UnicodeDecodeError as error:
                line, bad = None, f"not valid UTF-8 (byte {raw[error.start]:#04x} at offset {error.start} of the line)"
            if line is not None and not line.strip():
                continue
            place = _Place(path, position, line_number, start)
            yield place, ChunkError(place, bad, label=False) if bad else _parse_line(line, place)
            position += 1


def _iter_raw(path: str | Path) -> Iterator[tuple[_Place, object]]:
    path = str(path)
    if not Path(path).is_file():
        raise InputError(f"{path}: the chunks file does not exist")
    return _iter_json_lines(path) if is_json_lines(path) else _iter_json_array(path)


# --- checking one chunk --------------------------------------------------------------


def _chunk_id(place: _Place, record: dict) -> str:
    if "id" not in record:
        raise ChunkError(place, "has no 'id'")
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        shown = "" if value is None else " " + _quote(json.dumps(value), 40)
        raise ChunkError(place, f"'id' must be a string or an integer, got {_type_name(value)}{shown}")
    chunk_id = str(value)
    if not chunk_id.strip():
        raise ChunkError(place, "'id' is empty")
    problem = string_problem(chunk_id)
    if problem:
        raise ChunkError(place, f"'id' {problem}")
    return chunk_id


def _check_text(place: _Place, chunk_id: str, record: dict, name: str, required: bool) -> None:
    if name not in record or record[name] is None:
        if required:
            raise ChunkError(place, f"has no '{name}'" + _configured_note(name), chunk_id)
        return
    value = record[name]
    if not isinstance(value, str):
        raise ChunkError(place, f"'{name}' must be a string, got {_type_name(value)}", chunk_id)
    if required and not value.strip():
        kind = "empty" if not value else "only whitespace"
        raise ChunkError(place, f"'{name}' is {kind}" + _configured_note(name), chunk_id)
    problem = string_problem(value)
    if problem:
        raise ChunkError(place, f"'{name}' {problem}", chunk_id)


def _configured_note(name: str) -> str:
    if name == "content":
        return ""
    return f" (it is the configured text field: text_field: {name})"


def _check_record(place: _Place, record: object, text_field: str) -> str:
    if isinstance(record, ChunkError):
        raise record
    if not isinstance(record, dict):
        raise ChunkError(place, f"is {_type_name(record)}, expected an object with 'id' and 'content'")
    chunk_id = _chunk_id(place, record)
    _check_text(place, chunk_id, record, "content", required=True)
    _check_text(place, chunk_id, record, "summary", required=text_field == "summary")
    found = metadata_problem(record, TEXT_COLUMNS)
    if found:
        where, problem = found
        raise ChunkError(place, f"metadata {where} {problem}", chunk_id)
    return chunk_id


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def validate_chunks(
    path: str | Path, text_field: str = "content", on_bad_chunk: str = "fail", skip: Collection[int] = (),
    accepted: Callable[[int, int, str, dict], None] | None = None,
) -> CorpusSummary:
    """Read the whole file once. ``fail``: raise ``ChunkError`` at the first bad chunk;
    ``skip``: collect the bad chunks in ``rejected``. Positions in ``skip`` (rejected
    earlier) are passed over unchecked; a duplicate id rejects its later occurrence.
    ``accepted(position, place, id, record)`` is called for each accepted chunk, in order
    (``place`` as ``iter_records`` gives it: rule preflight's records index)."""
    _check_choice("text_field", text_field, TEXT_FIELDS)
    _check_choice("on_bad_chunk", on_bad_chunk, BAD_CHUNK_POLICIES)
    first_position: dict[str, int] = {}
    rejected: list[dict] = []
    seen = 0
    for place, record in _iter_raw(path):
        seen += 1
        if place.position in skip:
            continue
        try:
            chunk_id = _check_record(place, record, text_field)
            earlier = first_position.setdefault(chunk_id, place.position)
            if earlier != place.position:
                raise ChunkError(
                    place,
                    f"duplicate id {_quote(chunk_id)} at chunk #{earlier + 1} and chunk #{place.position + 1} "
                    "(ids are compared as text)",
                    chunk_id,
                    label=False,
                )
            if accepted is not None:
                accepted(place.position, place.place, chunk_id, record)
        except ChunkError as error:
            if on_bad_chunk == "fail":
                raise
            rejected.append(error.record())
    if not seen:
        raise InputError(f"{path}: contains no chunks")
    if not first_position:
        first = f"; the first: {rejected[0]['reason']}" if rejected else ""
        raise InputError(f"{path}: none of its {seen} chunks can be embedded{first}")
    return CorpusSummary(str(path), len(first_position), sha256_file(path), tuple(rejected))


# --- selecting and streaming -----------------------------------------------------------


def file_positions(ordinals: Iterable[int], skip: Collection[int]) -> list[int]:
    """Ordinals among the accepted chunks (sorted) -> their positions in the file."""
    skipped = sorted(skip)
    positions, passed = [], 0
    for ordinal in ordinals:
        while passed < len(skipped) and skipped[passed] <= ordinal + passed:
            passed += 1
        positions.append(ordinal + passed)
    return positions


def select_positions(
    count: int, max_chunks: int | None, sample: str = "head", seed: int = 0, skip: Collection[int] = ()
) -> list[int] | None:
    """Positions in the file of the chunks to embed, in input order; None means all of them
    (but those in ``skip``). ``count`` is the number of accepted chunks.

    Test mode (``max_chunks``) takes the first chunks (``head``) or a seeded
    sample (``random``) of the accepted ones; both keep the input order.
    """
    _check_choice("test_mode.sample", sample, SAMPLE_MODES)
    if max_chunks is None or max_chunks >= count:
        return None
    if max_chunks < 1:
        raise ConfigError(f"test_mode.max_chunks must be at least 1, got {max_chunks}")
    if sample == "head":
        ordinals = list(range(max_chunks))
    else:
        ordinals = sorted(random.Random(seed).sample(range(count), max_chunks))
    return file_positions(ordinals, skip) if skip else ordinals


def iter_chunks(
    path: str | Path,
    text_field: str = "content",
    positions: Iterable[int] | None = None,
    skip: Collection[int] = (),
) -> Iterator[Chunk]:
    """Yield the chunks at ``positions`` (all when None, but those in ``skip``) in input
    order. Call ``validate_chunks`` first: a bad chunk that is not skipped raises."""
    _check_choice("text_field", text_field, TEXT_FIELDS)
    wanted = None if positions is None else set(positions)
    for place, record in _iter_raw(path):
        if (wanted is not None and place.position not in wanted) or place.position in skip:
            continue
        if isinstance(record, ChunkError):
            raise record
        yield Chunk(
            position=place.position,
            id=str(record["id"]),
            text=record[text_field],
            record=record,
        )


def iter_records(path: str | Path, skip: Collection[int] = ()) -> Iterator[tuple[int, dict]]:
    """(place, record) of each chunk but those at the positions in ``skip``, in input order,
    for a reader of a file rule preflight has checked (the load), without the checks and the
    ``Chunk`` of ``iter_chunks``; ``place``: ``_Place.place``."""
    for place, record in _iter_raw(path):
        if place.position not in skip:
            yield place.place, _checked_record(path, f"chunk #{place.position + 1}", record)


def records_at(path: str | Path, places: Iterable[int]) -> dict[int, dict]:
    """The records at ``places`` (as ``iter_records`` gives them): a JSON Lines file is read
    only there; a JSON array is parsed once."""
    places = sorted(set(places))
    if not is_json_lines(path):
        by_position = {place.position: record for place, record in _iter_raw(path)} if places else {}
        return {place: _checked_record(path, f"chunk #{place + 1}", by_position.get(place)) for place in places}
    found = {}
    with open(path, "rb") as handle:
        for offset in places:
            handle.seek(offset)
            try:
                record = json.loads(handle.readline().decode("utf-8"))
            except (ValueError, RecursionError):
                record = None
            found[offset] = _checked_record(path, f"the chunk at byte {offset}", record)
    return found


def _checked_record(path, where: str, record) -> dict:
    if type(record) is not dict or "id" not in record:
        raise InputError(f"{path}: {where} is not a chunk object with an 'id' any more: the file changed "
                         "after rule preflight checked it; rerun the workflow")
    return record


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def find_texts(path: str | Path, text_field: str, ids: Iterable[str], skip: Collection[int] = ()) -> dict[str, str]:
    """The texts of a few chunks by id (streamed; stops once all are found)."""
    wanted = set(ids)
    found: dict[str, str] = {}
    if not wanted:
        return found
    for chunk in iter_chunks(path, text_field, skip=skip):
        if chunk.id in wanted and chunk.id not in found:
            found[chunk.id] = chunk.text
            if len(found) == len(wanted):
                break
    return found
