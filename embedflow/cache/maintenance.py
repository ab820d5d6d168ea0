"""``embedflow cache stats`` and ``embedflow cache prune`` (docs/cache.md, "Commands").

Prune keeps the entries the current outputs use (the text sha256 of every
float32 embeddings file embed wrote, under the identity its provenance names)
and those the current config's next run would use (the corpus under each
model's identity, as ``embedflow plan`` computes it); with ``--older-than``
it also keeps every entry written on or after that date. It compacts as it
goes: small segments (one per window) are merged, a day's rows with that
day's, into bigger segments, so that a cache stays a
few files per encoder (``COMPACT_BYTES`` of vectors each). It runs only under the cache's exclusive lock, which
no embed job holds while it runs: new segments are written whole before the
old ones are removed, so a killed prune loses nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from embedflow.cache.lock import run_lock
from embedflow.cache.segment import SegmentError, open_segment, prefixes_of, row_crcs, write_segment
from embedflow.cache.store import IDENTITY_FILE, SEGMENTS, Namespace, VectorCache

log = logging.getLogger(__name__)

# A compacted segment holds up to this many bytes of vectors (prune holds one in memory while
# it writes it): 174,762 rows at 384 dims, 26,214 at 2,560.
COMPACT_BYTES = 256 * 2**20
_READ_ROWS = 65_536  # rows read at a time while compacting or verifying (fewer when they are wide)


def namespace_stats(space: Namespace, identity: dict | None, verify: bool = False) -> dict:
    bad = dict(space.bad)
    if verify:
        for number, segment in enumerate(space.segments):
            problem = verify_rows(segment)
            if problem:
                bad[str(segment.path)] = problem
    summary = {key: (identity or {}).get(key) for key in ("source", "compute_precision", "document_prompt",
                                                           "max_seq_length", "truncate_dim", "backend")}
    return {
        "identity_key": space.key,
        "identity": summary,
        "entries": space.rows,
        "dim": space.dim,
        "segments": len(space.segments),
        "bytes": sum(s.bytes for s in space.segments),
        "bad_segments": bad,
    }


def verify_rows(segment) -> str | None:
    """Every row's crc32 (what open does not read): None when all match."""
    try:
        step = read_rows(segment.dim)
        for start in range(0, segment.rows, step):
            keys, vectors, crcs = segment.read_all(start, min(start + step, segment.rows))
            if not (row_crcs(keys, vectors) == crcs).all():
                return "a row does not match its crc32 (damaged)"
    except (SegmentError, OSError) as error:
        return str(error)
    return None


def cache_stats(path: str | Path, verify: bool = False) -> list[dict]:
    cache = VectorCache(path)
    return [namespace_stats(cache.open_key(key), cache.identity(key), verify) for key in cache.keys()]


# --- prune -------------------------------------------------------------------------------


@dataclass
class PruneReport:
    removed_entries: int = 0
    kept_entries: int = 0
    removed_namespaces: list[str] = field(default_factory=list)
    segments_before: int = 0
    segments_after: int = 0
    bad_segments_removed: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0


def prune(path: str | Path, keep: dict[str, np.ndarray], older_than: datetime | None = None,
          dry_run: bool = False) -> PruneReport:
    """Remove the entries not in ``keep`` (identity key -> sorted uint64 key prefixes), but
    those written on or after ``older_than``; compact what stays. Refused (CacheBusy) while
    a run holds the cache."""
    report = PruneReport()
    cache = VectorCache(path)
    with run_lock(path, exclusive=True):
        for key in cache.keys():
            _prune_namespace(cache.open_key(key), keep.get(key, np.empty(0, np.uint64)), older_than, dry_run, report)
            if not dry_run:
                _remove_temporaries(cache.path / key / SEGMENTS)
    return report


def _prune_namespace(space: Namespace, keep: np.ndarray, older_than, dry_run: bool, report: PruneReport) -> None:
    report.segments_before += len(space.segments) + len(space.bad)
    report.bytes_before += sum(s.bytes for s in space.segments)
    opened = []
    for segment in space.segments:
        try:
            opened.append((segment, prefixes_of(open_segment(segment.path)[1])))
        except (SegmentError, OSError) as error:
            space.bad[str(segment.path)] = str(error)
    # A repeated entry (two jobs encoded one text) is kept once: its first occurrence.
    first = _first_occurrence(np.concatenate([p for _, p in opened])) if opened else np.empty(0, bool)
    rewrite, untouched, start = [], [], 0
    for segment, prefixes in opened:
        wanted = _member(prefixes, keep) | (older_than is not None and _created(segment) >= older_than)
        wanted &= first[start : start + len(prefixes)]
        start += len(prefixes)
        report.removed_entries += int((~wanted).sum())
        report.kept_entries += int(wanted.sum())
        if wanted.all() and segment.rows >= compact_rows(space.dim) // 2:
            untouched.append(segment)
        else:
            rewrite.append((segment, np.flatnonzero(wanted)))
    untouched += _alone_and_whole(rewrite)
    rewrite = [item for item in rewrite if item[0] not in untouched]
    report.bad_segments_removed += sorted(space.bad)
    if not untouched and not any(len(rows) for _, rows in rewrite):
        report.removed_namespaces.append(space.key)
    written = [] if dry_run else _rewrite(space, rewrite)
    report.segments_after += len(untouched) + (len(written) if not dry_run else _count_groups(rewrite, space.dim))
    report.bytes_after += sum(s.bytes for s in untouched) + sum(p.stat().st_size for p in written)
    if dry_run:
        return
    for segment, _ in rewrite:
        segment.path.unlink(missing_ok=True)
    for bad in space.bad:
        Path(bad).unlink(missing_ok=True)
    if space.key in report.removed_namespaces:
        _remove_namespace(space.folder)


def _remove_namespace(folder: Path) -> None:
    segments = folder / SEGMENTS
    if segments.is_dir():
        _remove_temporaries(segments)
        if not any(segments.iterdir()):
            segments.rmdir()
    (folder / IDENTITY_FILE).unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def _alone_and_whole(rewrite) -> list:
    """Segments that keep every row and have no other segment of their day to merge with."""
    by_day: dict[str, list] = {}
    for segment, rows in rewrite:
        by_day.setdefault(_day(segment), []).append((segment, rows))
    return [group[0][0] for group in by_day.values() if len(group) == 1 and len(group[0][1]) == group[0][0].rows]


def _member(prefixes: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(prefixes), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, prefixes), len(sorted_set) - 1)
    return sorted_set[at] == prefixes


def _first_occurrence(prefixes: np.ndarray) -> np.ndarray:
    first = np.zeros(len(prefixes), dtype=bool)
    first[np.unique(prefixes, return_index=True)[1]] = True
    return first


def _created(segment) -> datetime:
    return datetime.fromisoformat(segment.created)


def _day(segment) -> str:
    return segment.created[:10]


def compact_rows(dim: int | None) -> int:
    return max(1, COMPACT_BYTES // (4 * (dim or 1)))


def read_rows(dim: int | None) -> int:
    return max(1, min(_READ_ROWS, compact_rows(dim) // 4))


def _count_groups(rewrite, dim: int | None) -> int:
    days: dict[str, int] = {}
    for segment, rows in rewrite:
        days[_day(segment)] = days.get(_day(segment), 0) + len(rows)
    return sum(-(-rows // compact_rows(dim)) for rows in days.values() if rows)


def _rewrite(space: Namespace, rewrite) -> list[Path]:
    """The kept rows of ``rewrite``'s segments as new segments, one day's rows with that day's,
    in their order; each written whole before any old one is removed."""
    written, buffer = [], _Buffer()
    for segment, rows in sorted(rewrite, key=lambda item: item[0].created):
        if buffer.day not in (None, _day(segment)):
            written += buffer.flush(space)
        buffer.day = _day(segment)
        step = read_rows(space.dim)
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            keys, vectors, crcs = segment.read(part)
            if not (row_crcs(keys, vectors) == crcs).all():
                log.warning("vector cache: segment %s is damaged (a row's crc32); its rows are dropped", segment.path)
                space.bad[str(segment.path)] = "a row does not match its crc32 (damaged)"
                break
            buffer.add(keys, vectors, segment)
            if buffer.rows >= compact_rows(space.dim):
                written += buffer.flush(space)
    return written + buffer.flush(space)


@dataclass
class _Buffer:
    keys: list = field(default_factory=list)
    vectors: list = field(default_factory=list)
    newest: object = None
    day: str | None = None

    @property
    def rows(self) -> int:
        return sum(len(k) for k in self.keys)

    def add(self, keys, vectors, segment) -> None:
        self.keys.append(keys)
        self.vectors.append(vectors)
        if self.newest is None or segment.created > self.newest.created:
            self.newest = segment

    def flush(self, space: Namespace) -> list[Path]:
        if not self.keys:
            return []
        # The newest part's time: --older-than never removes a row newer than its date.
        created = _created(self.newest)
        path = write_segment(space.folder / SEGMENTS, np.concatenate(self.keys), np.concatenate(self.vectors),
                             space.key, self.newest.facts, created)
        self.keys, self.vectors, self.newest = [], [], None
        return [path]


def _remove_temporaries(folder: Path) -> None:
    """Under the exclusive lock no writer runs: every temporary is a killed writer's."""
    for temporary in folder.glob(".*.tmp"):
        temporary.unlink(missing_ok=True)


# --- what the current outputs and config use ----------------------------------------------


def used_keys(config: dict, embeddings_glob: str) -> dict[str, np.ndarray]:
    """identity key -> sorted uint64 prefixes of the texts that (a) the float32 files of embed
    in results/ hold and (b) the config's next run embeds."""
    from embedflow.plan import corpus_keys, embedded_models
    from embedflow.config import model_output_slice
    from embedflow.identity import encoder_identity, identity_key, is_resolved
    from embedflow.variants import resolve

    used: dict[str, list[np.ndarray]] = {}
    for path in sorted(Path().glob(embeddings_glob)):
        key = _identity_of_output(path)
        if key:
            used.setdefault(key, []).append(_text_prefixes(path))
    corpus = corpus_keys(config)
    prefixes = prefixes_of(corpus.keys)
    for model in embedded_models(config)[0]:
        identity = encoder_identity(model_output_slice(resolve(config["models"], model)))
        if is_resolved(identity):
            used.setdefault(identity_key(identity), []).append(prefixes)
    return {key: np.unique(np.concatenate(parts)) for key, parts in used.items()}


def _identity_of_output(path: Path) -> str | None:
    from embedflow.provenance import provenance_path

    try:
        record = json.loads(provenance_path(path).read_text())
    except (OSError, ValueError):
        return None
    return ((record.get("cache") or {}).get("identity_key")) or (record.get("model") or {}).get("identity_key")


def _text_prefixes(path: Path) -> np.ndarray:
    from embedflow.cache.segment import keys_of
    from embedflow.embeddings_file import iter_batches

    parts = [prefixes_of(keys_of(batch.hashes)) for batch in iter_batches(path, columns=("text_sha256",))]
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)
