"""Shards: which chunks each embed job encodes, cut by content, not by position.

The selected chunks (input order, rejected ones left out, test mode applied)
are cut twice:

- into **windows**, about ``embed.window_rows`` chunks each: one encode()
  call and one Parquet row group each;
- windows into **shards**, about ``embed.shard_rows`` chunks each: one embed
  job (``gpu=1``) each.

Both cuts are content-defined: a cut falls after a chunk whose id hashes to
a multiple of a span (with a minimum and a maximum size), as content-defined
chunking does for files. An insertion or edit moves at most the cuts around
it, so the other shards keep their chunks, their name and their file: a
corpus edit reruns the shards it touched. Shards are whole windows, and the
windows do not depend on the shard size, so every window is encoded the same
way, in one encode() call with the same texts, whatever the shard count, and
the gathered file is the same bytes (docs/design.md, "Shards").

A shard is named by a digest of its content (ids and text hashes): a changed
shard is a new file, an unchanged one keeps its file across corpus edits.
This module is plain Python (the Snakefile reads plans while planning).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedflow.errors import InputError

# embed.shard_rows: auto aims at AUTO_SHARDS shards, never below AUTO_MIN_ROWS rows a
# shard (a job loads its model: a few seconds to a minute), rounded up to a power of two
# so that a growing corpus changes the cuts only when it doubles.
AUTO = "auto"
AUTO_SHARDS = 64
AUTO_MIN_ROWS = 16_384
NAME_LENGTH = 16  # hex digits of a shard's content digest in its file name
PLAN_FORMAT = 1


@dataclass(frozen=True)
class Shard:
    name: str  # the first NAME_LENGTH hex digits of ``sha256``
    sha256: str  # digest of the shard's ids and text hashes, in order
    start: int  # ordinal of its first chunk among the selected chunks
    rows: int
    windows: list[int]  # rows of each window, in order
    first_id: str
    last_id: str


@dataclass(frozen=True)
class ShardPlan:
    corpus: dict  # path, sha256, chunks (accepted), rejected, selected
    text_field: str
    window_rows: int
    shard_rows: int  # in effect (auto resolved)
    shard_rows_setting: int | str
    # Which chunks of the file are selected: file positions (test mode), or None for
    # every chunk but the rejected ones (``skip``, from rule preflight).
    positions: list[int] | None = None
    skip: list[int] = field(default_factory=list)
    shards: list[Shard] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> ShardPlan:
        values = {key: value for key, value in data.items() if key != "format"}
        values["shards"] = [Shard(**shard) for shard in data["shards"]]
        return cls(**values)

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise InputError(f"the shard plan has no shard {name!r} (it changed after the job was planned)")


def read_plan(path: str | Path) -> ShardPlan:
    return ShardPlan.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def shard_names(path: str | Path) -> list[str]:
    """The shards of a plan file, in corpus order (what rule gather reads)."""
    return [shard["name"] for shard in json.loads(Path(path).read_text(encoding="utf-8"))["shards"]]


# --- the cuts --------------------------------------------------------------------------


def id_hash(chunk_id: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.sha256(salt + chunk_id.encode("utf-8")).digest()[:8], "big")


class Cutter:
    """Content-defined cuts of a stream, about ``target`` items a group: a group ends at an
    item whose hash is a multiple of the span once it has at least target // 2 items, or
    when it reaches 2 * target. A group's end depends on its own items only (from the
    previous end on), so an edit moves the ends near it and no others."""

    def __init__(self, target: int):
        self.least, self.most = max(1, target // 2), max(1, 2 * target)
        self.span = max(1, target - self.least + 1)  # expected size: least - 1 + span = target
        self.size = 0

    def ends_group(self, value: int) -> bool:
        self.size += 1
        if (self.size >= self.least and value % self.span == 0) or self.size >= self.most:
            self.size = 0
            return True
        return False


def content_cuts(hashes: Iterable[int], target: int) -> list[int]:
    """Sizes of the groups ``Cutter`` cuts ``hashes`` into."""
    cutter, sizes, size = Cutter(target), [], 0
    for value in hashes:
        size += 1
        if cutter.ends_group(value):
            sizes.append(size)
            size = 0
    return sizes + ([size] if size else [])


WINDOW_SALT = b"embedflow window\0"
SHARD_SALT = b"embedflow shard\0"


def resolve_shard_rows(setting: int | str, rows: int) -> int:
    """``auto``: AUTO_SHARDS shards, at least AUTO_MIN_ROWS rows each, a power of two."""
    if setting == AUTO:
        wanted = max(AUTO_MIN_ROWS, math.ceil(rows / AUTO_SHARDS))
        return 1 << (wanted - 1).bit_length()
    if not isinstance(setting, int) or isinstance(setting, bool) or setting < 1:
        raise InputError(f"embed.shard_rows must be a positive integer or 'auto', got {setting!r}")
    return setting


def _digest_line(chunk_id: str, text_sha256: str) -> bytes:
    return chunk_id.encode("utf-8") + b"\0" + text_sha256.encode("ascii") + b"\n"


def content_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """Digest of (id, text sha256) pairs in order: what a shard is made of."""
    digest = hashlib.sha256()
    for chunk_id, text_sha256 in pairs:
        digest.update(_digest_line(chunk_id, text_sha256))
    return digest.hexdigest()


@dataclass
class _OpenShard:
    start: int
    first_id: str
    rows: int = 0
    windows: list[int] = field(default_factory=list)
    digest: object = field(default_factory=hashlib.sha256)

    def add(self, chunk_id: str, text_sha256: str) -> None:
        self.digest.update(_digest_line(chunk_id, text_sha256))
        self.rows += 1

    def end_window(self) -> None:
        self.windows.append(self.rows - sum(self.windows))

    def close(self, last_id: str) -> Shard:
        digest = self.digest.hexdigest()
        return Shard(digest[:NAME_LENGTH], digest, self.start, self.rows, self.windows, self.first_id, last_id)


def plan_shards(pairs: Iterable[tuple[str, str]], window_rows: int, shard_rows: int) -> list[Shard]:
    """The shards of the selected chunks, from their (id, text sha256) in order, in one pass:
    memory holds the shards, not the chunks. A window ends by the hash of its last id; a
    shard ends with a window, by another hash of that id."""
    windows, shards = Cutter(window_rows), Cutter(max(1, round(shard_rows / window_rows)))
    done, current, last_id = [], None, None
    for ordinal, (chunk_id, text_sha256) in enumerate(pairs):
        current = current or _OpenShard(ordinal, chunk_id)
        current.add(chunk_id, text_sha256)
        last_id = chunk_id
        if windows.ends_group(id_hash(chunk_id, WINDOW_SALT)):
            current.end_window()
            if shards.ends_group(id_hash(chunk_id, SHARD_SALT)):
                done.append(current.close(chunk_id))
                current = None
    if current is not None:
        if sum(current.windows) < current.rows:
            current.end_window()
        done.append(current.close(last_id))
    return done


def split_windows(items: Iterable, windows: Sequence[int]) -> Iterator[list]:
    """``items`` cut into lists of the given sizes (the rest, if any, is not read)."""
    iterator = iter(items)
    for rows in windows:
        window = [item for _, item in zip(range(rows), iterator)]
        if len(window) != rows:
            raise InputError(f"the shard plan expects {rows} more chunks than the chunks file has")
        yield window


# --- reading a shard ------------------------------------------------------------------


def shard_pairs(chunks_path: str | Path, plan: ShardPlan, shard: Shard) -> Iterator[tuple[str, str]]:
    """(id, text) of the shard's chunks, in order; the file is read up to its last chunk."""
    from itertools import islice

    from embedflow.chunks import iter_chunks

    chunks = iter_chunks(chunks_path, plan.text_field, plan.positions, frozenset(plan.skip))
    return ((chunk.id, chunk.text) for chunk in islice(chunks, shard.start, shard.start + shard.rows))


def check_shard(chunks_path: str | Path, plan: ShardPlan, shard: Shard) -> None:
    """Before any model work: the chunks file still holds the shard the plan names."""
    from embedflow.hashing import sha256_text

    pairs = [(chunk_id, sha256_text(text)) for chunk_id, text in shard_pairs(chunks_path, plan, shard)]
    if len(pairs) != shard.rows or content_digest(pairs) != shard.sha256:
        raise InputError(
            f"{chunks_path}: shard {shard.name} (chunks {shard.first_id!r} to {shard.last_id!r}) is not what "
            "the shard plan recorded: the chunks file changed after the plan was made; run the workflow again"
        )
