"""The two streaming passes over an embeddings file (and its float32 file, for a derived precision).

Memory stays bounded: the files are streamed in batches (``batch_rows``),
twice. Pass one: integrity, decode and drift, every row once beside its
float32 row. Pass two: neighbours of a fixed sample of rows and of the probe
queries, scored against every row, keeping a running top-k.

Scoring is cosine similarity on vectors decoded to float32: int8 dequantized
to the centre of its bucket, binary unpacked to +-1, the probe queries in
float32 as the model gave them (asymmetric scoring, as a search over that
column does).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from embedflow.embeddings_file import COLUMNS, EmbeddingsBatch, EmbeddingsMetadata, iter_batches
from embedflow.precision import get_precision, to_float32, unpack_binary
from embedflow.probes_file import Probes
from embedflow.vectors import RunningTopK, row_cosines, unit_rows
from embedflow.verify.fingerprints import EXAMPLES, Fingerprints, hash_fingerprints, id_fingerprints
from embedflow.verify.report import VerifySettings

NEIGHBOURS = 10  # top-10 neighbour overlap
SCORE_BLOCK = 2048  # columns of a (sample rows x rows) score matrix computed at once


# --- what the passes read and gather ------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """What a pass reads: the file under test and the float32 file its rows are compared with."""

    path: str | Path
    settings: VerifySettings
    meta: EmbeddingsMetadata
    rows: int
    ranges: np.ndarray | None  # int8: the calibration ranges (2, dim)
    reference: str | Path | None = None  # None: no float32 rows to compare with


@dataclass
class Sample:
    """The rows whose neighbours pass two finds: drawn once (seeded), filled by pass one."""

    positions: np.ndarray  # sorted row positions
    vectors: np.ndarray  # their rows, decoded to float32
    reference: np.ndarray | None  # derived precisions: their float32 rows (zero where not aligned)

    @classmethod
    def draw(cls, rows: int, dim: int, checks: dict, derived: bool) -> Sample:
        count = min(int(checks["sample_rows"]), rows)
        rng = np.random.default_rng(int(checks["seed"]))
        positions = np.sort(rng.choice(rows, size=count, replace=False)) if rows else np.array([], int)
        reference = np.zeros((count, dim), dtype=np.float32) if derived else None
        return cls(positions, np.zeros((count, dim), dtype=np.float32), reference)


@dataclass
class Figures:
    """What pass one gathers, batch by batch."""

    doc_ids: set[str]  # ids of the probe documents, whose float32 rows are kept
    id_fp: list[np.ndarray] = field(default_factory=list)
    text_fp: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    nonfinite: list[int] = field(default_factory=list)  # positions, first few
    nonfinite_count: int = 0
    zero: list[int] = field(default_factory=list)
    zero_count: int = 0
    norm_checked: int = 0
    norm_max_deviation: float = 0.0
    norm_worst: int | None = None
    bf16_inexact: int = 0
    padding_bits: int = 0
    ref_compared: int = 0
    ref_misaligned: int = 0
    cos_sum: float = 0.0
    cos_min: float = math.inf
    cos_min_position: int | None = None
    cos_excluded: int = 0
    values_compared: int = 0
    values_agree: int = 0  # int8: within half a bucket; binary: sign matches
    int8_max_error_buckets: float = 0.0
    doc_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # float32 rows of the probe documents

    def note(self, positions: np.ndarray, store: list[int]) -> int:
        store.extend(int(p) for p in positions[: EXAMPLES - len(store)])
        return len(positions)

    def fingerprints(self) -> Fingerprints:
        return Fingerprints(
            np.concatenate(self.id_fp) if self.id_fp else np.zeros(0, np.uint64),
            np.concatenate(self.text_fp) if self.text_fp else np.zeros(0, np.uint64),
        )


def _cut(batch: EmbeddingsBatch, start: int, stop: int | None) -> EmbeddingsBatch:
    def part(values):
        return None if values is None else values[start:stop]

    return EmbeddingsBatch(part(batch.ids), batch.vectors[start:stop], part(batch.hashes))


def aligned(left: Iterator[EmbeddingsBatch], right: Iterator[EmbeddingsBatch] | None):
    """Pairs (left slice, right slice of the same rows or None), whatever each file's batch sizes;
    every row of ``left`` is yielded once, rows of ``right`` past the end of ``left`` are ignored."""
    right_batch = None
    for batch in left:
        start = 0
        while start < len(batch.vectors):
            if right is not None and (right_batch is None or not len(right_batch.vectors)):
                right_batch = next(right, None)
                if right_batch is None:
                    right = None
            if right is None:
                yield _cut(batch, start, None), None
                break
            count = min(len(batch.vectors) - start, len(right_batch.vectors))
            yield _cut(batch, start, start + count), _cut(right_batch, 0, count)
            right_batch = _cut(right_batch, count, None)
            start += count


@contextmanager
def _batch_pairs(stream: Stream, columns: tuple[str, ...] = COLUMNS):
    """``aligned`` batches of the file and of its float32 file (None without one); both closed after."""
    batch_rows = stream.settings.batch_rows
    left = iter_batches(stream.path, batch_rows, columns)
    right = iter_batches(stream.reference, batch_rows, columns) if stream.reference is not None else None
    try:
        yield aligned(left, right)
    finally:
        left.close()
        if right is not None:
            right.close()


# --- pass one: integrity, decode, drift ---------------------------------------------


@dataclass(frozen=True)
class _Decoding:
    """How pass one decodes a batch of the file, and what it checks on the way."""

    precision: str
    dim: int
    ranges: np.ndarray | None
    packed: bool
    check_norms: bool
    steps: np.ndarray | None  # int8: a bucket's width per dim (1 where a dim is constant)
    padding_mask: int  # binary: the bits of the last byte past dim

    @classmethod
    def of(cls, stream: Stream) -> _Decoding:
        precision, meta, ranges = get_precision(stream.settings.precision), stream.meta, stream.ranges
        steps = None
        if precision.name == "int8":
            steps = ((ranges[1] - ranges[0]) / 255).astype(np.float32)
            steps = np.where(steps == 0, 1, steps)
        padding_mask = 0
        if precision.packed and meta.dim % 8:
            padding_mask = (1 << (8 - meta.dim % 8)) - 1
        return cls(precision.name, meta.dim, ranges, precision.packed, precision.is_float and meta.normalized,
                   steps, padding_mask)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return to_float32(stored, self.precision, self.dim, self.ranges)


def fingerprints_only(stream: Stream, found: Figures) -> None:
    """Pass one for a file whose vectors cannot be decoded: the id and text checks still run."""
    for batch in iter_batches(stream.path, stream.settings.batch_rows):
        found.id_fp.append(id_fingerprints(batch.ids))
        found.text_fp.append(hash_fingerprints(batch.hashes))
        found.rows += len(batch.ids)


def rows_only(stream: Stream, found: Figures) -> None:
    """Pass one for a file without usable id / text_sha256 columns: only rows are counted."""
    with pq.ParquetFile(stream.path, pre_buffer=False) as parquet:
        for record_batch in parquet.iter_batches(batch_size=stream.settings.batch_rows, columns=[]):
            found.rows += record_batch.num_rows


def pass_one(stream: Stream, sample: Sample, found: Figures) -> None:
    """Every row once: fingerprints, vector figures, the comparison with its float32 row
    (derived precisions), the probe documents' float32 rows and the sample's rows."""
    decoding = _Decoding.of(stream)
    derived = sample.reference is not None
    sample_cursor = 0
    with _batch_pairs(stream) as pairs:
        for batch, ref in pairs:
            offset, count = found.rows, len(batch.ids)
            ids_fp = id_fingerprints(batch.ids)
            found.id_fp.append(ids_fp)
            found.text_fp.append(hash_fingerprints(batch.hashes))
            stored = batch.vectors
            decoded = decoding.decode(stored)
            _note_vectors(found, decoding, stored, decoded, offset)

            aligned_rows = np.zeros(count, dtype=bool)
            float32 = stored if not derived else None
            if derived and ref is not None:
                float32 = ref.vectors.astype(np.float32, copy=False)
                aligned_rows = id_fingerprints(ref.ids) == ids_fp
                found.ref_misaligned += int(count - aligned_rows.sum())
                if aligned_rows.any():
                    _compare_to_float32(found, decoding, stored[aligned_rows], decoded[aligned_rows],
                                        float32[aligned_rows], np.flatnonzero(aligned_rows) + offset)
            elif derived:
                found.ref_misaligned += count

            if float32 is not None and len(found.doc_vectors) < len(found.doc_ids):
                for i, chunk_id in enumerate(batch.ids):
                    if chunk_id in found.doc_ids and (not derived or aligned_rows[i]):
                        found.doc_vectors.setdefault(chunk_id, np.array(float32[i], dtype=np.float32))

            while sample_cursor < len(sample.positions) and sample.positions[sample_cursor] < offset + count:
                row = int(sample.positions[sample_cursor]) - offset
                sample.vectors[sample_cursor] = decoded[row]
                if derived and aligned_rows[row]:
                    sample.reference[sample_cursor] = float32[row]
                sample_cursor += 1
            found.rows += count


def _note_vectors(found: Figures, decoding: _Decoding, stored, decoded, offset: int) -> None:
    """Non-finite and zero rows, norms, bfloat16 exactness, binary padding bits of one batch."""
    finite = np.isfinite(decoded).all(axis=1)
    bad = np.flatnonzero(~finite)
    found.nonfinite_count += found.note(bad + offset, found.nonfinite)
    if decoding.packed:
        zero = ~stored.any(axis=1)
        if decoding.padding_mask:
            found.padding_bits += int(np.count_nonzero(stored[:, -1] & decoding.padding_mask))
    elif decoding.steps is not None:
        zero = (np.abs(decoded) <= decoding.steps).all(axis=1)
    else:
        zero = ~stored.any(axis=1)
    found.zero_count += found.note(np.flatnonzero(zero) + offset, found.zero)
    if decoding.precision == "bfloat16":
        found.bf16_inexact += int(np.count_nonzero(stored.view(np.uint32) & 0xFFFF))
    if decoding.check_norms:
        usable = finite & ~zero
        deviation = np.abs(np.linalg.norm(decoded[usable], axis=1) - 1)
        found.norm_checked += int(usable.sum())
        if len(deviation):
            worst_row = int(np.argmax(deviation))
            if deviation[worst_row] > found.norm_max_deviation:
                found.norm_max_deviation = float(deviation[worst_row])
                found.norm_worst = int(np.flatnonzero(usable)[worst_row]) + offset


def _compare_to_float32(found: Figures, decoding: _Decoding, stored, decoded, float32, positions) -> None:
    """Drift and decode figures of rows (at ``positions``) that line up with their float32 rows."""
    cosines, valid = row_cosines(decoded, float32)
    found.cos_excluded += int((~valid).sum())
    found.ref_compared += len(positions)
    if valid.any():
        found.cos_sum += float(np.nansum(cosines))
        lowest = int(np.nanargmin(cosines))
        if cosines[lowest] < found.cos_min:
            found.cos_min = float(cosines[lowest])
            found.cos_min_position = int(positions[lowest])
    if decoding.precision == "int8":
        error = np.abs(decoded - float32) / decoding.steps
        found.values_compared += error.size
        found.values_agree += int(np.count_nonzero(error <= 0.5 + 1e-3))
        finite_error = error[np.isfinite(error)]
        if finite_error.size:
            found.int8_max_error_buckets = max(found.int8_max_error_buckets, float(finite_error.max()))
    elif decoding.precision == "binary":
        bits = unpack_binary(stored, decoding.dim).astype(bool)
        found.values_compared += bits.size
        found.values_agree += int(np.count_nonzero(bits == (float32 > 0)))


# --- pass two: neighbours -------------------------------------------------------


@dataclass
class Neighbours:
    k: int
    own: RunningTopK | None  # the sample rows' k nearest rows (themselves excluded)
    reference: RunningTopK | None  # the same in the float32 file
    self_scores: np.ndarray
    best_other: np.ndarray  # each sample row's best score with a row of another text
    queries_own: RunningTopK  # the probe queries' top rows (the spot check)
    queries_reference: RunningTopK | None
    queries_scored: bool  # False: the probe queries do not fit the file (dims)

    def found_themselves(self) -> np.ndarray:
        """Which sample rows score themselves above every row of another text."""
        return (self.self_scores > 0) & (self.best_other < self.self_scores - 1e-6)


def pass_two(stream: Stream, probe: Probes, sample: Sample, text_fp: np.ndarray) -> Neighbours:
    """Score the sample rows and the probe queries against every row (and the float32 rows,
    with ``stream.reference``), keeping running top-k lists."""
    settings, meta, rows = stream.settings, stream.meta, stream.rows
    queries = probe.vectors[probe.select("query")]
    query_ok = probe.dim == meta.dim and len(queries) > 0
    k = min(NEIGHBOURS, rows - 1)
    spot_k = min(int(settings.checks["spot_check_k"]), rows)
    sample_unit = unit_rows(sample.vectors)
    sample_ref = unit_rows(sample.reference) if sample.reference is not None else None
    positions = sample.positions
    sample_text = text_fp[positions] if len(text_fp) == rows else np.zeros(len(positions), np.uint64)
    result = Neighbours(
        k=k,
        own=RunningTopK(len(sample_unit), k) if k > 0 else None,
        reference=RunningTopK(len(sample_unit), k) if k > 0 and sample_ref is not None else None,
        self_scores=(sample_unit * sample_unit).sum(1),
        best_other=np.full(len(sample_unit), -np.inf, dtype=np.float32),
        queries_own=RunningTopK(len(queries) if query_ok else 0, spot_k),
        queries_reference=RunningTopK(len(queries), spot_k) if query_ok and stream.reference is not None else None,
        queries_scored=query_ok,
    )
    query_unit = unit_rows(queries) if query_ok else None
    offset = 0
    with _batch_pairs(stream, columns=("embedding",)) as pairs:
        for batch, ref in pairs:
            count = len(batch.vectors)
            vectors = unit_rows(to_float32(batch.vectors, settings.precision, meta.dim, stream.ranges))
            ref_vectors = None
            if ref is not None and len(ref.vectors) == count:
                ref_vectors = unit_rows(ref.vectors.astype(np.float32, copy=False))
            # Score matrices (sample rows x columns) a block of columns at a time, so that
            # memory does not grow with batch_rows.
            for start in range(0, count, SCORE_BLOCK):
                stop = min(start + SCORE_BLOCK, count)
                at = offset + start
                here = (positions >= at) & (positions < offset + stop)
                self_rows, self_cols = np.flatnonzero(here), positions[here] - at
                scores = sample_unit @ vectors[start:stop].T
                scores[self_rows, self_cols] = -np.inf  # neighbours exclude the row itself
                if result.own is not None:
                    result.own.update(scores, at)
                scores[sample_text[:, None] == text_fp[at : offset + stop][None, :]] = -np.inf
                np.maximum(result.best_other, scores.max(axis=1, initial=-np.inf), out=result.best_other)
                if result.reference is not None and ref_vectors is not None:
                    scores = sample_ref @ ref_vectors[start:stop].T
                    scores[self_rows, self_cols] = -np.inf
                    result.reference.update(scores, at)
            if query_ok:
                result.queries_own.update(query_unit @ vectors.T, offset)
                if result.queries_reference is not None and ref_vectors is not None:
                    result.queries_reference.update(query_unit @ ref_vectors.T, offset)
            offset += count
    return result
