"""The vector cache: float32 vectors by (encoder identity, text sha256).

    cache = VectorCache("results/cache")
    space = cache.namespace(identity)          # embedflow.identity.encoder_identity(spec)
    vectors, found = space.get(text_hashes)    # found rows hold cached vectors
    space.put(text_hashes[~found], new_vectors, facts)   # one new segment, written whole

Layout: ``<path>/<identity key>/identity.json`` and ``segments/*.seg``
(embedflow.cache.segment). A namespace holds one sorted uint64 array of its
keys' first 8 bytes and one uint32 row number per key (12 bytes a key in
memory, the vectors stay on disk); a hit is checked against the full 32-byte
key and the row's crc32 before its vector is served. See docs/cache.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedflow.atomic import write_json
from embedflow.cache.segment import (
    SUFFIX,
    Segment,
    SegmentError,
    keys_of,
    open_segment,
    prefixes_of,
    row_crcs,
    write_segment,
)
from embedflow.identity import identity_key

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
SEGMENTS = "segments"
# Segments written by this process are searched one by one until this many, then merged in.
_PENDING_LIMIT = 32


@dataclass
class _Index:
    """Sorted key prefixes and, for each, its global row number (segments laid end to end)."""

    prefixes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))

    @classmethod
    def build(cls, prefixes: list[np.ndarray], first_row: int) -> _Index:
        """Sorted, holding at most the keys' prefixes three times over while it sorts."""
        if not prefixes:
            return cls()
        joined = np.concatenate(prefixes)
        prefixes.clear()  # the caller's per-segment arrays: freed as soon as they are joined
        rows = np.argsort(joined).astype(np.uint32)
        if first_row:
            rows += np.uint32(first_row)
        return cls(joined[rows - np.uint32(first_row)], rows)

    def candidates(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query prefix, the range [start, stop) of equal prefixes."""
        return (np.searchsorted(self.prefixes, query, "left"), np.searchsorted(self.prefixes, query, "right"))

    def contains(self, query: np.ndarray) -> np.ndarray:
        """Whether each query prefix is present. The queries are searched in sorted order, which
        lets numpy's binary search start where the last one ended (several times faster)."""
        if not len(self.prefixes):
            return np.zeros(len(query), dtype=bool)
        order = np.argsort(query)
        at = np.searchsorted(self.prefixes, query[order])
        found = np.zeros(len(query), dtype=bool)
        found[order] = self.prefixes[np.minimum(at, len(self.prefixes) - 1)] == query[order]
        return found


class Namespace:
    """The cached vectors of one encoder identity."""

    def __init__(self, folder: Path, key: str):
        self.folder = folder
        self.key = key
        self.segments: list[Segment] = []
        self.starts = np.zeros(1, dtype=np.int64)  # global row number of each segment's first row
        self.bad: dict[str, str] = {}  # segment file -> what is wrong with it
        self._bad_numbers: set[int] = set()
        self._index = _Index()
        self._pending: list[_Index] = []
        self._open()

    # --- opening -----------------------------------------------------------------------

    def _open(self) -> None:
        prefixes = []
        for path in sorted((self.folder / SEGMENTS).glob(f"*{SUFFIX}")):
            try:
                segment, keys = open_segment(path)
            except (SegmentError, OSError) as error:
                self._report_bad(path, str(error))
                continue
            if segment.dim and self.segments and segment.dim != self.segments[0].dim:
                self._report_bad(path, f"{segment.dim} dims where the others have {self.segments[0].dim}")
                continue
            self._append(segment)
            prefixes.append(prefixes_of(keys))
        self._index = _Index.build(prefixes, 0)

    def _append(self, segment: Segment) -> int:
        number = len(self.segments)
        self.segments.append(segment)
        self.starts = np.append(self.starts, self.starts[-1] + segment.rows)
        return number

    def _report_bad(self, path: Path, problem: str) -> None:
        self.bad[str(path)] = problem
        log.warning("vector cache: segment %s is ignored: %s; its rows are encoded again", path, problem)

    # --- facts --------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.starts[-1])

    @property
    def dim(self) -> int | None:
        return self.segments[0].dim if self.segments else None

    def facts(self) -> dict:
        """What the encoder said when the newest segment was written (dim, normalize, ...)."""
        good = [s for n, s in enumerate(self.segments) if n not in self._bad_numbers]
        return dict(good[-1].facts) if good else {}

    # --- lookups ------------------------------------------------------------------------

    def contains(self, hex_hashes) -> np.ndarray:
        """Which hashes have an entry, by their 8-byte prefix (plan's count: a false hit needs two
        texts whose sha256 share 64 bits, about 1 in 10^12 at 10 M keys); ``get`` checks fully."""
        return self.contains_prefixes(prefixes_of(keys_of(hex_hashes)))

    def contains_prefixes(self, query: np.ndarray) -> np.ndarray:
        found = np.zeros(len(query), dtype=bool)
        for index in (self._index, *self._pending):
            found |= index.contains(query)
        return found

    def get(self, hex_hashes) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, found): found rows of ``vectors`` hold the cached float32 vector, checked
        against the full key and its crc32; the others are zero (encode them)."""
        vectors, sources = self.get_with_sources(hex_hashes)
        return vectors, sources >= 0

    def get_with_sources(self, hex_hashes) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, the number of the segment each row came from, -1 where none had it)."""
        keys = keys_of(hex_hashes)
        count = len(keys)
        vectors = np.zeros((count, self.dim or 0), dtype=np.float32)
        sources = np.full(count, -1, dtype=np.int64)
        if not count or not self.rows:
            return vectors, sources
        for attempt in self._candidates(prefixes_of(keys)):
            todo = (sources < 0) & (attempt >= 0)
            if todo.any():
                self._serve(np.flatnonzero(todo), attempt[todo], keys, vectors, sources)
        return vectors, sources

    def _candidates(self, query: np.ndarray) -> list[np.ndarray]:
        """Candidate global rows per query, one array per attempt (-1: none), best first."""
        attempts = []
        for index in (self._index, *self._pending):
            start, stop = index.candidates(query)
            depth = int((stop - start).max()) if len(query) else 0
            for offset in range(depth):  # more than one: duplicates or a shared prefix, rare
                position = start + offset
                ok = position < stop
                rows = np.full(len(query), -1, dtype=np.int64)
                rows[ok] = index.rows[position[ok]]
                attempts.append(rows)
        return attempts

    def _serve(self, positions, rows, keys, vectors, sources) -> None:
        numbers = np.searchsorted(self.starts, rows, "right") - 1
        for number in np.unique(numbers):
            if number in self._bad_numbers:
                continue
            mine = numbers == number
            where, local = positions[mine], (rows[mine] - self.starts[number])
            order = np.argsort(local)
            where, local = where[order], local[order]
            segment = self.segments[number]
            try:
                stored_keys, stored, crcs = segment.read(local)
            except (SegmentError, OSError) as error:
                self._mark_bad(number, str(error))
                continue
            same = (stored_keys == keys[where]).all(axis=1)
            if not (row_crcs(stored_keys, stored) == crcs).all():
                self._mark_bad(number, "a row does not match its crc32 (damaged)")
                continue
            vectors[where[same]] = stored[same]
            sources[where[same]] = number

    def _mark_bad(self, number: int, problem: str) -> None:
        self._bad_numbers.add(number)
        self._report_bad(self.segments[number].path, problem)

    # --- writing ------------------------------------------------------------------------

    def put(self, hex_hashes, vectors: np.ndarray, facts: dict) -> Path | None:
        """Add rows as one new segment (written whole, then renamed into place); searchable
        at once by this namespace. Returns the segment's path (None: nothing to write)."""
        if not len(vectors):
            return None
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"vector cache {self.folder}: {vectors.shape[1]} dims, its entries have {self.dim}")
        keys = keys_of(hex_hashes)
        folder = self.folder / SEGMENTS
        folder.mkdir(parents=True, exist_ok=True)
        path = write_segment(folder, keys, vectors, self.key, facts)
        segment, _ = open_segment(path)
        first = int(self.starts[-1])
        self._append(segment)
        self._pending.append(_Index.build([prefixes_of(keys)], first))
        if len(self._pending) > _PENDING_LIMIT:
            self._merge_pending()
        return path

    def _merge_pending(self) -> None:
        """Insert the pending keys into the sorted index: O(n) copies, no sort of the whole."""
        new = _Index.build([p.prefixes for p in self._pending], 0)
        new_rows = np.concatenate([p.rows for p in self._pending])[new.rows]
        at = np.searchsorted(self._index.prefixes, new.prefixes, "right")  # after equal ones: older first
        self._index = _Index(np.insert(self._index.prefixes, at, new.prefixes), np.insert(self._index.rows, at, new_rows))
        self._pending = []


class VectorCache:
    """The cache folder (config ``cache.path``): one namespace per encoder identity."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def namespace(self, identity: dict) -> Namespace:
        key = identity_key(identity)
        folder = self.path / key
        if not (folder / IDENTITY_FILE).exists():
            # the same content whoever writes it: racing writers agree
            write_json(folder / IDENTITY_FILE, identity)
        return Namespace(folder, key)

    def keys(self) -> list[str]:
        """The identity keys that have a folder here."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and len(p.name) == 64)

    def open_key(self, key: str) -> Namespace:
        return Namespace(self.path / key, key)

    def identity(self, key: str) -> dict | None:
        path = self.path / key / IDENTITY_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
