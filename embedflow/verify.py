"""Stage ``verify``: proves an embeddings file sound before it reaches the database.

Two steps, two rules:

* ``measure_embeddings`` (rule ``measure``) reads
  ``embeddings_<model>_<precision>.parquet`` with the chunks file, the embed
  provenance, the probes file of the model (rule ``probe``) and, for a derived
  precision, the float32 file it was made from. It returns a ``Report`` whose
  checks hold a measured value and how to judge it (which threshold), plus a
  spot check that a person reads; the rule keeps it as
  ``<model>_<precision>.measures.json``.
* ``judge`` (rule ``verify``) applies the configured thresholds: each check
  gets a status (``pass`` | ``warn`` | ``fail``) and its threshold. The rule
  writes the report as JSON and Markdown when nothing fails; when a check
  fails it logs the failing checks and the whole report and fails the job, so
  no report exists and nothing downstream of that model x precision runs.

Moving a threshold reruns the judging only: it reads a small JSON file, never
the embeddings, and never needs the float32 file (which is ``temp()`` when
float32 is not a configured precision, and would otherwise be made again).
``verify_embeddings`` does both steps in one call.

Memory stays bounded: the files are streamed in batches (``batch_rows``), twice
(pass 1: integrity, decode and drift; pass 2: neighbours of a fixed sample of
rows and of the probe queries, scored against every row, keeping a running
top-k). What grows with the corpus is 16 bytes a row of fingerprints (64-bit
hashes of id and text hash, for the id and text checks), in the file and in
the chunks: 32 MB per million rows.

Scoring is cosine similarity on vectors decoded to float32: int8 dequantized to
the centre of its bucket, binary unpacked to +-1, the probe queries in float32
as the model gave them (asymmetric scoring, as a search over that column does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedflow.chunks import CorpusSummary, file_positions, find_texts, is_json_lines, iter_chunks, select_positions
from embedflow.embeddings_file import EmbeddingsBatch, EmbeddingsMetadata, fixed_size_list_to_numpy
from embedflow.errors import ConfigError, InputError, UserError
from embedflow.hashing import sha256_file, sha256_text
from embedflow.precision import SOURCE_PRECISION, get_precision, to_float32, unpack_binary
from embedflow.probes_file import Probes, read_probes
from embedflow.provenance import Timer, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.text_files import bom_length
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUS_ORDER = {PASS: 0, WARN: 1, FAIL: 2}
NEIGHBOURS = 10  # top-10 neighbour overlap
SCORE_BLOCK = 2048  # columns of a (sample rows x rows) score matrix computed at once
FIRST_WORDS = 12
EXAMPLES = 5  # ids named in a finding


# --- checks ---------------------------------------------------------------------


@dataclass
class Check:
    name: str
    value: object
    detail: str = ""
    unit: str = ""  # of a count, for people: "rows", "mismatches"
    judge: dict = field(default_factory=dict)  # how: equals an expected value, or at least / at most a threshold
    status: str | None = None  # set by ``judge``
    threshold: object = None  # set by ``judge``


def at_least(name: str, value: float, levels: str, detail: str = "") -> Check:
    """pass at or above the ``warn`` level of thresholds[levels]; warn below it; fail below ``fail``."""
    return Check(name, value, detail, judge={"kind": "at_least", "levels": levels})


def at_most(name: str, value: float, levels: str, detail: str = "") -> Check:
    return Check(name, value, detail, judge={"kind": "at_most", "levels": levels})


def equals(name: str, value, expected, detail: str = "", unit: str = "") -> Check:
    return Check(name, value, detail, unit, judge={"kind": "equals", "expected": expected})


def none_of(name: str, count: int, detail: str = "", unit: str = "rows") -> Check:
    """A count of bad things that must be zero."""
    return equals(name, count, 0, detail, unit)


def worst(statuses) -> str:
    return max((s for s in statuses if s), key=STATUS_ORDER.__getitem__, default=PASS)


def _levels(thresholds: dict, path: str) -> dict:
    value = thresholds
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"verify: no threshold {path!r} configured")
        value = value[key]
    return value if isinstance(value, dict) else {"warn": value, "fail": value}


def judge(report: Report, thresholds: dict) -> Report:
    """Give every check its status and threshold; a value that is not a finite number fails."""
    for check in report.checks:
        rule = check.judge
        if rule["kind"] == "equals":
            check.threshold = {"equals": rule["expected"]}
            check.status = PASS if check.value == rule["expected"] else FAIL
            continue
        levels = _levels(thresholds, rule["levels"])
        value = check.value
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if rule["kind"] == "at_least":
            check.threshold = {"fail_below": levels["fail"], "warn_below": levels["warn"]}
            check.status = FAIL if not number or value < levels["fail"] else WARN if value < levels["warn"] else PASS
        else:
            check.threshold = {"fail_above": levels["fail"], "warn_above": levels["warn"]}
            check.status = FAIL if not number or value > levels["fail"] else WARN if value > levels["warn"] else PASS
    return report


# --- settings and report --------------------------------------------------------


@dataclass(frozen=True)
class VerifySettings:
    model_key: str
    precision: str
    model: dict  # the model's output slice: source, adapter, truncate_dim, normalize, ...
    selection: dict  # text_field, and max_chunks / sample / seed in test mode
    checks: dict  # sample_rows, seed, spot_check_k; and thresholds (the slice for this precision) to judge
    batch_rows: int = 8192  # speed and memory only


@dataclass
class Report:
    model: str
    precision: str
    file: str
    checks: list[Check] = field(default_factory=list)
    not_run: list[dict] = field(default_factory=list)
    spot_check: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return worst(check.status for check in self.checks)

    def check(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def failing(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    def to_json(self) -> dict:
        """The report: every check with its status and threshold."""
        checks = [{k: v for k, v in asdict(check).items() if k != "judge"} for check in self.checks]
        return _jsonable(
            {
                "model": self.model,
                "precision": self.precision,
                "file": self.file,
                "status": self.status,
                "checks": checks,
                "not_run": self.not_run,
                "spot_check": self.spot_check,
                "summary": self.summary,
            }
        )

    def to_measurements(self) -> dict:
        """What ``measure`` keeps: values and how to judge them, no statuses (full float precision)."""
        checks = [{k: v for k, v in asdict(check).items() if k not in ("status", "threshold")} for check in self.checks]
        return _jsonable(
            {
                "model": self.model,
                "precision": self.precision,
                "file": self.file,
                "checks": checks,
                "not_run": self.not_run,
                "spot_check": self.spot_check,
                "summary": self.summary,
            },
            digits=None,
        )

    @classmethod
    def from_measurements(cls, record: dict) -> Report:
        return cls(
            model=record["model"],
            precision=record["precision"],
            file=record["file"],
            checks=[Check(**check) for check in record["checks"]],
            not_run=record["not_run"],
            spot_check=record["spot_check"],
            summary=record["summary"],
        )

    def to_markdown(self) -> str:
        return render_markdown(self)


def _jsonable(value, digits: int | None = 6):
    if isinstance(value, dict):
        return {str(key): _jsonable(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, digits) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return value if digits is None else round(value, digits)
    return value


# --- fingerprints ---------------------------------------------------------------


def id_fingerprints(ids: list[str | None]) -> np.ndarray:
    """64-bit hashes of ids (blake2b): set, order and duplicate checks without keeping strings."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(("" if i is None else i).encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def hash_fingerprints(hexes: list[str | None]) -> np.ndarray:
    """The first 64 bits of hex sha256 digests (0 for a missing or malformed one)."""

    def first64(value):
        try:
            return int(value[:16], 16)
        except (TypeError, ValueError):
            return 0

    return np.fromiter((first64(h) for h in hexes), dtype=np.uint64, count=len(hexes))


@dataclass
class _Fingerprints:
    ids: np.ndarray
    texts: np.ndarray


def _chunks(path, text_field: str, positions=None, skip=()) -> Iterator:
    """The chunks, as embed read them (``skip``: those rule preflight rejected). A file that no
    longer reads as a corpus (edited after embedding) stops verify with a message, as it would
    stop embed."""
    number = 0
    try:
        for number, chunk in enumerate(iter_chunks(path, text_field, positions, skip), start=1):
            if not isinstance(chunk.text, str):
                raise InputError(f"{path}: chunk #{number} (id {chunk.id!r}): '{text_field}' is not a string; "
                                 "the file changed after embedding; run embed (it validates the file)")
            yield chunk
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path}: chunk #{number + 1} is not a valid chunk ({error}); the file changed "
                         "after embedding; run embed (it validates the file)") from None


def chunk_fingerprints(path, text_field: str, positions, block: int = 65536, skip=()) -> _Fingerprints:
    """Fingerprints of the selected chunks, kept as arrays a block at a time (no list of strings)."""
    ids, texts = [], []
    id_blocks, text_blocks = [], []
    for chunk in _chunks(path, text_field, positions, skip):
        ids.append(chunk.id)
        texts.append(sha256_text(chunk.text))
        if len(ids) == block:
            id_blocks.append(id_fingerprints(ids))
            text_blocks.append(hash_fingerprints(texts))
            ids, texts = [], []
    id_blocks.append(id_fingerprints(ids))
    text_blocks.append(hash_fingerprints(texts))
    return _Fingerprints(np.concatenate(id_blocks), np.concatenate(text_blocks))


# --- streaming ------------------------------------------------------------------


def _open(path) -> pq.ParquetFile:
    # pre_buffer (pyarrow's default) keeps the column chunks it has read: memory would grow
    # with the file (measured: +150 MB per 100k rows x 384 float32).
    return pq.ParquetFile(path, pre_buffer=False)


def _batches(parquet: pq.ParquetFile, batch_rows: int, vectors_only: bool = False) -> Iterator[EmbeddingsBatch]:
    """Batches of a file; ``vectors_only`` reads the embedding column alone (ids and hashes None)."""
    columns = ["embedding"] if vectors_only else None
    for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        yield EmbeddingsBatch(
            ids=None if vectors_only else record_batch.column("id").to_pylist(),
            vectors=fixed_size_list_to_numpy(record_batch.column("embedding")),
            hashes=None if vectors_only else record_batch.column("text_sha256").to_pylist(),
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


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; non-finite values count as 0 and a zero row stays zero."""
    vectors = np.where(np.isfinite(vectors), vectors, 0).astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def row_cosines(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine per row, and which rows it is defined for (both finite and non-zero)."""
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    valid = np.isfinite(norm_a) & np.isfinite(norm_b) & (norm_a > 0) & (norm_b > 0)
    cosines = (a * b).sum(1) / np.where(valid, norm_a * norm_b, 1)
    return np.where(valid, cosines, np.nan), valid


class TopK:
    """Running top-k (scores and row positions) for each of a fixed set of query rows."""

    def __init__(self, rows: int, k: int):
        self.k = k
        self.scores = np.full((rows, k), -np.inf, dtype=np.float32)
        self.index = np.full((rows, k), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, offset: int) -> None:
        if self.k == 0 or scores.size == 0:
            return
        floor = self.scores.min(axis=1)
        rows = np.flatnonzero((scores > floor[:, None]).any(axis=1))
        if not len(rows):
            return
        scores = scores[rows]
        if scores.shape[1] > self.k:
            candidates = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
        else:
            candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        merged_scores = np.concatenate([self.scores[rows], np.take_along_axis(scores, candidates, 1)], 1)
        merged_index = np.concatenate([self.index[rows], candidates + offset], 1)
        best = np.argpartition(-merged_scores, self.k - 1, axis=1)[:, : self.k]
        self.scores[rows] = np.take_along_axis(merged_scores, best, 1)
        self.index[rows] = np.take_along_axis(merged_index, best, 1)

    def ranked(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.scores, order, 1), np.take_along_axis(self.index, order, 1)


# --- the verification -----------------------------------------------------------


class _Accumulator:
    """Figures gathered batch by batch in pass 1."""

    def __init__(self):
        self.id_fp: list[np.ndarray] = []
        self.text_fp: list[np.ndarray] = []
        self.rows = 0
        self.nonfinite: list[int] = []  # positions, first few
        self.nonfinite_count = 0
        self.zero: list[int] = []
        self.zero_count = 0
        self.norm_checked = 0
        self.norm_max_deviation = 0.0
        self.norm_worst: int | None = None
        self.bf16_inexact = 0
        self.padding_bits = 0
        self.ref_compared = 0
        self.ref_misaligned = 0
        self.cos_sum = 0.0
        self.cos_min = math.inf
        self.cos_min_position: int | None = None
        self.cos_excluded = 0
        self.values_compared = 0
        self.values_agree = 0  # int8: within half a bucket; binary: sign matches
        self.int8_max_error_buckets = 0.0
        self.doc_vectors: dict[str, np.ndarray] = {}  # float32 rows of the re-encoded probe documents

    def note(self, positions: np.ndarray, store: list[int]) -> int:
        store.extend(int(p) for p in positions[: EXAMPLES - len(store)])
        return len(positions)


def _examples(positions: list[int], ids_at: dict[int, str]) -> str:
    return ", ".join(f"row {p} (id {ids_at.get(p, '?')!r})" for p in positions[:EXAMPLES])


def ids_at_positions(parquet_path, positions, batch_rows: int = 65536) -> dict[int, str]:
    """ids of a few rows, reading only the id column."""
    wanted = sorted({int(p) for p in positions if p is not None and p >= 0})
    found: dict[int, str] = {}
    if not wanted:
        return found
    offset = 0
    with _open(parquet_path) as parquet:
        for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=["id"]):
            end = offset + record_batch.num_rows
            here = [p for p in wanted if offset <= p < end]
            if here:
                column = record_batch.column("id")
                found.update({p: column[p - offset].as_py() for p in here})
            offset = end
            if offset > wanted[-1]:
                break
    return found


def fingerprint_names(parquet_path, fingerprints: set[int], batch_rows: int = 65536) -> dict[int, tuple[int, str]]:
    """(first position, id) for the given id fingerprints, reading only the id column."""
    found: dict[int, tuple[int, str]] = {}
    if not fingerprints:
        return found
    offset = 0
    with _open(parquet_path) as parquet:
        for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=["id"]):
            ids = record_batch.column("id").to_pylist()
            for i, fp in enumerate(id_fingerprints(ids)):
                if int(fp) in fingerprints and int(fp) not in found:
                    found[int(fp)] = (offset + i, ids[i])
            offset += len(ids)
            if len(found) == len(fingerprints):
                break
    return found


def chunk_names(chunks_path, text_field: str, positions, fingerprints: set[int], skip=()) -> dict[int, str]:
    found: dict[int, str] = {}
    if not fingerprints:
        return found
    for chunk in iter_chunks(chunks_path, text_field, positions, skip):
        fp = int(id_fingerprints([chunk.id])[0])
        if fp in fingerprints:
            found.setdefault(fp, chunk.id)
            if len(found) == len(fingerprints):
                break
    return found


def _first_words(text: str, count: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the provenance record ({error})") from None


def verify_embeddings(parquet_path: str | Path, *, settings: VerifySettings, **inputs) -> Report:
    """Measure and judge one embeddings file (``measure_embeddings``, then ``judge``)."""
    return judge(measure_embeddings(parquet_path, settings=settings, **inputs), settings.checks["thresholds"])


def measure_embeddings(
    parquet_path: str | Path,
    *,
    chunks: str | Path,
    provenance: str | Path,
    embed_provenance: str | Path,
    probes: str | Path,
    settings: VerifySettings,
    reference: str | Path | None = None,
    rejected: str | Path | None = None,
) -> Report:
    """Every measurement on one embeddings file; see the module docstring. ``rejected``: rule
    preflight's list of the chunks left out (on_bad_chunk: skip), which embed skipped too."""
    started = time.perf_counter()
    report = Report(settings.model_key, settings.precision, str(parquet_path))
    add = report.checks.append

    def skip(name: str, reason: str) -> None:
        report.not_run.append({"name": name, "reason": reason})

    file_record = _read_json(provenance)
    embed_record = _read_json(embed_provenance)
    probe = read_probes(probes)
    derived = settings.precision != SOURCE_PRECISION
    if derived and reference is None:
        raise UserError(f"verify of {settings.precision} needs the float32 file it was derived from")

    # -- the chunks file ------------------------------------------------------------
    # Read as a stream (not validate_chunks, which keeps every id in a dict): the sha256
    # check below tells whether this is the file that embed validated.
    text_field = settings.selection["text_field"]
    left_out = rejected_positions(rejected)
    positions = None
    count = None
    if settings.selection.get("max_chunks") is not None:  # test mode: which chunks embed took
        count = sum(1 for _ in _chunks(chunks, text_field, skip=left_out))
        positions = select_positions(
            count,
            settings.selection["max_chunks"],
            settings.selection.get("sample", "head"),
            settings.selection.get("seed", 0),
            left_out,
        )
    expected = chunk_fingerprints(chunks, text_field, positions, skip=left_out)
    corpus = CorpusSummary(str(chunks), count if count is not None else len(expected.ids), sha256_file(chunks))

    # -- the file: opens, provenance, metadata, layout ---------------------------
    try:
        parquet = _open(parquet_path)
        meta = EmbeddingsMetadata.from_parquet(parquet.schema_arrow.metadata, str(parquet_path))
    except (OSError, pa.ArrowException, UserError, ValueError, TypeError) as error:
        add(equals("parquet_readable", "cannot open", "reads end to end", f"cannot open: {error}"))
        _finish_chunk_checks(report, corpus, embed_record, None)
        report.summary = {"seconds": round(time.perf_counter() - started, 3)}
        return report

    with parquet:
        file_sha256 = sha256_file(parquet_path)
        file_bytes = Path(parquet_path).stat().st_size
        add(_provenance_check(settings, file_record, embed_record, file_sha256, file_bytes, derived))
        add(_metadata_check(settings, meta, embed_record))
        layout, decodable = _layout_check(settings, meta, parquet.schema_arrow)
        add(layout)
        dim_detail = f"the model gives {probe.dim} dims" + (
            f" (truncate_dim {settings.model['truncate_dim']})" if settings.model.get("truncate_dim") else ""
        )
        add(equals("dim", meta.dim, probe.dim, dim_detail))
        rows = parquet.metadata.num_rows

        ranges = meta.ranges_array() if settings.precision == "int8" else None
        sample_rows = min(int(settings.checks["sample_rows"]), rows)
        rng = np.random.default_rng(int(settings.checks["seed"]))
        sample_positions = np.sort(rng.choice(rows, size=sample_rows, replace=False)) if rows else np.array([], int)

        acc = _Accumulator()
        sample_vectors = np.zeros((sample_rows, meta.dim), dtype=np.float32)
        sample_reference = np.zeros((sample_rows, meta.dim), dtype=np.float32) if derived else None
        doc_ids = {i for i, kind in zip(probe.ids, probe.kinds) if kind == "document" and i is not None}
        read_error = None
        if decodable:
            try:
                _pass_one(
                    parquet, reference, settings, meta, ranges, acc, sample_positions,
                    sample_vectors, sample_reference, doc_ids,
                )
            except (OSError, pa.ArrowException) as error:
                read_error = f"row {acc.rows}: {error}"
        else:
            try:
                for batch in _batches(parquet, settings.batch_rows):
                    acc.id_fp.append(id_fingerprints(batch.ids))
                    acc.text_fp.append(hash_fingerprints(batch.hashes))
                    acc.rows += len(batch.ids)
            except (OSError, pa.ArrowException) as error:
                read_error = f"row {acc.rows}: {error}"

        readable = read_error is None and acc.rows == rows
        report.checks.insert(0, equals(
            "parquet_readable",
            f"{acc.rows} of {rows} rows" if readable else f"stopped at row {acc.rows} of {rows}",
            f"{rows} of {rows} rows",
            read_error or f"{parquet.metadata.num_row_groups} row groups, {file_bytes} bytes",
        ))
        file_fp = _Fingerprints(
            np.concatenate(acc.id_fp) if acc.id_fp else np.zeros(0, np.uint64),
            np.concatenate(acc.text_fp) if acc.text_fp else np.zeros(0, np.uint64),
        )
        _id_checks(report, parquet_path, chunks, text_field, positions, file_fp, expected, embed_record, left_out)
        _finish_chunk_checks(report, corpus, embed_record, meta)
        add(_text_hash_check(parquet_path, file_fp, expected))

        if not decodable or not readable:
            for name in ("finite", "zero_vectors", "norms", "drift", "neighbours", "spot_check"):
                skip(name, "the file cannot be decoded or read (see layout / parquet_readable)")
        else:
            _vector_checks(report, settings, meta, acc)
            if derived:
                _decode_checks(report, settings, acc, rows)
            _model_checks(report, settings, probe, acc, embed_record, meta)
            ids_match_reference = derived and acc.ref_misaligned == 0 and acc.ref_compared == rows
            # Rows are compared with float32 rows by position only when every id lines up.
            neighbours = _pass_two(
                parquet, reference if ids_match_reference else None, settings, meta, ranges, probe,
                sample_positions, sample_vectors, sample_reference if ids_match_reference else None,
                file_fp.texts, report,
            )
            if neighbours:
                _neighbour_checks(report, neighbours, derived, ids_match_reference)
                in_order = np.array_equal(file_fp.ids, expected.ids)
                chunk_positions = None
                if in_order and positions is not None:
                    chunk_positions = lambda row: positions[row]  # noqa: E731
                elif in_order:
                    chunk_positions = lambda row: file_positions([row], left_out)[0] if left_out else row  # noqa: E731
                report.spot_check = _spot_check(
                    parquet_path, chunks, text_field, probe, neighbours, settings, chunk_positions, left_out
                )

    seconds = time.perf_counter() - started
    report.summary = {
        "rows": rows,
        "dim": meta.dim,
        "precision": settings.precision,
        "bytes": file_bytes,
        "sha256": file_sha256,
        "chunks_selected": len(expected.ids),
        "chunks_rejected": len(left_out),
        "sample_rows": sample_rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    return report


def _pass_one(
    parquet, reference, settings, meta, ranges, acc, sample_positions,
    sample_vectors, sample_reference, doc_ids,
) -> None:
    precision = get_precision(settings.precision)
    derived = sample_reference is not None
    check_norms = precision.is_float and meta.normalized
    steps = None
    if settings.precision == "int8":
        steps = ((ranges[1] - ranges[0]) / 255).astype(np.float32)
        steps = np.where(steps == 0, 1, steps)
    padding_mask = 0
    if precision.packed and meta.dim % 8:
        padding_mask = (1 << (8 - meta.dim % 8)) - 1
    reference_file = _open(reference) if derived else None
    try:
        right = _batches(reference_file, settings.batch_rows) if derived else None
        sample_cursor = 0
        for batch, ref in aligned(_batches(parquet, settings.batch_rows), right):
            offset, count = acc.rows, len(batch.ids)
            ids_fp = id_fingerprints(batch.ids)
            acc.id_fp.append(ids_fp)
            acc.text_fp.append(hash_fingerprints(batch.hashes))
            stored = batch.vectors
            decoded = to_float32(stored, settings.precision, meta.dim, ranges)
            finite = np.isfinite(decoded).all(axis=1)
            bad = np.flatnonzero(~finite)
            acc.nonfinite_count += acc.note(bad + offset, acc.nonfinite)
            if precision.packed:
                zero = ~stored.any(axis=1)
                if padding_mask:
                    acc.padding_bits += int(np.count_nonzero(stored[:, -1] & padding_mask))
            elif steps is not None:
                zero = (np.abs(decoded) <= steps).all(axis=1)
            else:
                zero = ~stored.any(axis=1)
            acc.zero_count += acc.note(np.flatnonzero(zero) + offset, acc.zero)
            if settings.precision == "bfloat16":
                acc.bf16_inexact += int(np.count_nonzero(stored.view(np.uint32) & 0xFFFF))
            if check_norms:
                usable = finite & ~zero
                deviation = np.abs(np.linalg.norm(decoded[usable], axis=1) - 1)
                acc.norm_checked += int(usable.sum())
                if len(deviation):
                    worst_row = int(np.argmax(deviation))
                    if deviation[worst_row] > acc.norm_max_deviation:
                        acc.norm_max_deviation = float(deviation[worst_row])
                        acc.norm_worst = int(np.flatnonzero(usable)[worst_row]) + offset

            aligned_rows = np.zeros(count, dtype=bool)
            float32 = stored if not derived else None
            if derived and ref is not None:
                float32 = ref.vectors.astype(np.float32, copy=False)
                aligned_rows = id_fingerprints(ref.ids) == ids_fp
                acc.ref_misaligned += int(count - aligned_rows.sum())
                if aligned_rows.any():
                    _compare_to_float32(acc, settings.precision, stored, decoded, float32, aligned_rows,
                                        offset, ranges, steps, meta.dim)
            elif derived:
                acc.ref_misaligned += count

            if float32 is not None and len(acc.doc_vectors) < len(doc_ids):
                for i, chunk_id in enumerate(batch.ids):
                    if chunk_id in doc_ids and (not derived or aligned_rows[i]):
                        acc.doc_vectors.setdefault(chunk_id, np.array(float32[i], dtype=np.float32))

            while sample_cursor < len(sample_positions) and sample_positions[sample_cursor] < offset + count:
                row = int(sample_positions[sample_cursor]) - offset
                sample_vectors[sample_cursor] = decoded[row]
                if derived and aligned_rows[row]:
                    sample_reference[sample_cursor] = float32[row]
                sample_cursor += 1
            acc.rows += count
    finally:
        if reference_file is not None:
            reference_file.close()


def _compare_to_float32(acc, precision, stored, decoded, float32, rows, offset, ranges, steps, dim) -> None:
    cosines, valid = row_cosines(decoded[rows], float32[rows])
    acc.cos_excluded += int((~valid).sum())
    acc.ref_compared += int(rows.sum())
    if valid.any():
        acc.cos_sum += float(np.nansum(cosines))
        lowest = int(np.nanargmin(cosines))
        if cosines[lowest] < acc.cos_min:
            acc.cos_min = float(cosines[lowest])
            acc.cos_min_position = int(np.flatnonzero(rows)[lowest]) + offset
    if precision == "int8":
        error = np.abs(decoded[rows] - float32[rows]) / steps
        acc.values_compared += error.size
        acc.values_agree += int(np.count_nonzero(error <= 0.5 + 1e-3))
        finite_error = error[np.isfinite(error)]
        if finite_error.size:
            acc.int8_max_error_buckets = max(acc.int8_max_error_buckets, float(finite_error.max()))
    elif precision == "binary":
        bits = unpack_binary(stored[rows], dim).astype(bool)
        acc.values_compared += bits.size
        acc.values_agree += int(np.count_nonzero(bits == (float32[rows] > 0)))


# --- checks built from what the passes gathered ----------------------------------


def _provenance_check(settings, record, embed_record, sha256, size, derived) -> Check:
    problems = []
    output = record.get("output", {})
    if output.get("sha256") != sha256:
        problems.append(f"file sha256 {sha256[:12]}… but its provenance records {str(output.get('sha256'))[:12]}…")
    if output.get("bytes") != size:
        problems.append(f"file has {size} bytes, its provenance records {output.get('bytes')}")
    wildcards = record.get("wildcards", {})
    for key, value in (("model", settings.model_key), ("precision", settings.precision)):
        if key in wildcards and wildcards[key] != value:
            problems.append(f"provenance wildcard {key}={wildcards[key]!r}, expected {value!r}")
    if derived:
        source_sha = embed_record.get("output", {}).get("sha256")
        inputs = [item.get("sha256") for item in record.get("inputs", [])]
        if source_sha not in inputs:
            problems.append("was not derived from the current float32 file (its input sha256 differs)")
    embedded_with = embed_record.get("config", {}).get("model", {})
    for key in ("source", "revision", "adapter", "truncate_dim", "document_prompt", "compute_precision", "normalize"):
        if key in embedded_with and key in settings.model and embedded_with[key] != settings.model[key]:
            problems.append(f"embedded with {key}={embedded_with[key]!r}, configured {settings.model[key]!r}")
    return none_of("provenance", len(problems), "; ".join(problems) or "file sha256 and size, wildcards and model "
                   "config agree with the provenance records", unit="mismatches")


def _metadata_check(settings, meta: EmbeddingsMetadata, embed_record) -> Check:
    expected = {
        "model": settings.model_key,
        "model_source": settings.model.get("source"),
        "precision": settings.precision,
        "normalized": settings.model.get("normalize"),
        "compute_precision": settings.model.get("compute_precision"),
        "text_field": settings.selection.get("text_field"),
        "dim": embed_record.get("embedding", {}).get("dim"),
        "corpus_sha256": embed_record.get("corpus", {}).get("sha256"),
    }
    problems = [
        f"{key}: file says {getattr(meta, key)!r}, expected {value!r}"
        for key, value in expected.items()
        if value is not None and getattr(meta, key) != value
    ]
    return none_of("metadata", len(problems), "; ".join(problems) or
                   "model, source, precision, normalization, compute precision, text field, dim and corpus "
                   "sha256 agree with the config and the embed provenance", unit="mismatches")


def _layout_check(settings, meta: EmbeddingsMetadata, schema: pa.Schema) -> tuple[Check, bool]:
    precision = get_precision(settings.precision)
    problems = []
    decodable = True
    for name in ("id", "text_sha256"):
        if schema.get_field_index(name) < 0 or schema.field(name).type != pa.string():
            problems.append(f"column {name!r} is missing or not a string")
            decodable = False
    width = precision.width(meta.dim)
    want = pa.list_(pa.from_numpy_dtype(precision.numpy_dtype), width)
    if schema.get_field_index("embedding") < 0:
        problems.append("no 'embedding' column")
        decodable = False
    elif schema.field("embedding").type != want:
        problems.append(f"embedding is {schema.field('embedding').type}, expected {want}")
        decodable = False
    if settings.precision == "int8":
        ranges = meta.ranges_array()
        if ranges is None:
            problems.append("int8 file without int8_ranges in its metadata")
            decodable = False
        elif ranges.shape != (2, meta.dim):
            problems.append(f"int8_ranges has shape {ranges.shape}, expected (2, {meta.dim})")
            decodable = False
        elif not np.isfinite(ranges).all() or (ranges[0] > ranges[1]).any():
            problems.append("int8_ranges are not finite, or a minimum exceeds its maximum")
    elif meta.int8_ranges is not None:
        problems.append(f"{settings.precision} file carries int8_ranges")
    found = schema.field("embedding").type if schema.get_field_index("embedding") >= 0 else None
    describe = {
        "float32": "float32 values",
        "float16": "float16 values",
        "bfloat16": "float32 values that bfloat16 represents exactly",
        "int8": "int8 codes, with (2, dim) calibration ranges in the metadata",
        "binary": "sign bits packed 8 per byte, unused bits zero",
    }[settings.precision]
    value = _list_type(found) if found is not None else "no embedding column"
    check = equals(
        "layout",
        "; ".join([value, *problems]) if problems else value,
        _list_type(want),
        "; ".join(problems) or f"id and text_sha256 strings; embedding: {describe}",
    )
    return check, decodable


def _layout_problem(report: Report, problem: str) -> None:
    """A layout problem found while streaming (bfloat16 values, binary padding bits)."""
    layout = report.check("layout")
    layout.value = f"{layout.value}; {problem}"
    layout.detail = problem


def _list_type(value_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(value_type):
        try:
            name = np.dtype(value_type.value_type.to_pandas_dtype()).name
        except (NotImplementedError, TypeError):
            name = str(value_type.value_type)
        return f"{name}[{value_type.list_size}]"
    return str(value_type)


def _id_checks(report, parquet_path, chunks, text_field, positions, found: _Fingerprints, expected, embed_record,
               skip=()):
    add = report.checks.append
    rows, wanted = len(found.ids), len(expected.ids)
    embedded = embed_record.get("corpus", {}).get("embedded")
    detail = f"{wanted} chunks selected from the chunks file" + (
        f"; embed recorded {embedded}" if embedded is not None and embedded != wanted else ""
    )
    add(equals("row_count", rows, wanted, detail))

    unique, counts = np.unique(found.ids, return_counts=True)
    duplicated = unique[counts > 1]
    extra_rows = int((counts[counts > 1] - 1).sum())
    names = fingerprint_names(parquet_path, {int(x) for x in duplicated[:EXAMPLES]}) if len(duplicated) else {}
    add(none_of("ids_unique", extra_rows, unit="repeated rows", detail=(
        "duplicated: " + ", ".join(repr(name) for _, name in names.values())) if extra_rows else "every id once"))

    missing = np.setdiff1d(expected.ids, found.ids)
    extra = np.setdiff1d(found.ids, expected.ids)
    findings = []
    if len(missing):
        names = chunk_names(chunks, text_field, positions, {int(x) for x in missing[:EXAMPLES]}, skip)
        findings.append(f"{len(missing)} chunk id(s) missing from the file: " + ", ".join(map(repr, names.values())))
    if len(extra):
        names = fingerprint_names(parquet_path, {int(x) for x in extra[:EXAMPLES]})
        findings.append(f"{len(extra)} id(s) not in the chunks: " + ", ".join(repr(n) for _, n in names.values()))
    add(none_of("ids_match", len(missing) + len(extra), "; ".join(findings) or "same set of ids as the chunks",
                unit="ids missing or extra"))

    common = min(rows, wanted)
    moved = np.flatnonzero(found.ids[:common] != expected.ids[:common])
    out_of_place = int(len(moved) + abs(rows - wanted))
    if out_of_place:
        first = int(moved[0]) if len(moved) else common
        at = ids_at_positions(parquet_path, [first])
        detail = (f"{out_of_place} row(s) not at the position of their chunk; first at row {first} "
                  f"(id {at.get(first, '(none)')!r})")
    else:
        detail = "rows in the order of the chunks file"
    add(none_of("ids_order", out_of_place, detail, unit="rows out of place"))


def _finish_chunk_checks(report, corpus, embed_record, meta) -> None:
    recorded = embed_record.get("corpus", {}).get("sha256")
    detail = f"{corpus.path}: sha256 {corpus.sha256[:12]}…; embed provenance: {str(recorded)[:12]}…"
    if meta is not None and meta.corpus_sha256 != corpus.sha256:
        detail += f"; file metadata: {meta.corpus_sha256[:12]}…"
    ok = recorded == corpus.sha256
    report.checks.append(equals(
        "chunks_sha256", corpus.sha256, recorded,
        detail if ok else detail + " (the chunks file changed after embedding)",
    ))


def _text_hash_check(parquet_path, found: _Fingerprints, expected: _Fingerprints) -> Check:
    order = np.argsort(expected.ids, kind="stable")
    sorted_ids = expected.ids[order]
    where = np.searchsorted(sorted_ids, found.ids)
    where = np.minimum(where, max(len(sorted_ids) - 1, 0))
    known = (sorted_ids[where] == found.ids) if len(sorted_ids) else np.zeros(len(found.ids), bool)
    differs = known & (expected.texts[order][where] != found.texts) if len(sorted_ids) else known
    count = int(differs.sum())
    detail = f"{int(known.sum())} rows compared by id with the current chunk text"
    if count:
        rows = np.flatnonzero(differs)[:EXAMPLES]
        names = ids_at_positions(parquet_path, rows)
        detail = (f"{count} row(s) embedded a text that is not the chunk's current text: "
                  + _examples([int(r) for r in rows], names) + "; re-run embed")
    return none_of("text_hashes", count, detail, unit="rows with another text")


def _vector_checks(report, settings, meta, acc: _Accumulator) -> None:
    add = report.checks.append
    names = ids_at_positions(report.file, acc.nonfinite + acc.zero + [acc.norm_worst])
    add(none_of("finite", acc.nonfinite_count, unit="rows with NaN or inf", detail=
                f"rows with NaN or inf: {_examples(acc.nonfinite, names)}" if acc.nonfinite_count
                else "every value finite"))
    zero_kind = {"int8": "every value within one bucket of 0", "binary": "no bit set"}.get(settings.precision, "all 0")
    add(none_of("zero_vectors", acc.zero_count, unit="zero rows", detail=
                f"rows with {zero_kind}: {_examples(acc.zero, names)}" if acc.zero_count
                else f"no row with {zero_kind}"))
    precision = get_precision(settings.precision)
    if precision.is_float and meta.normalized:
        detail = f"largest |L2 norm - 1| over {acc.norm_checked} rows (finite, non-zero)"
        if acc.norm_worst is not None:
            detail += f", at {_examples([acc.norm_worst], names)}"
        add(at_most("norms", acc.norm_max_deviation, "norm_tolerance", detail))
    if settings.precision == "bfloat16" and acc.bf16_inexact:
        _layout_problem(report, f"{acc.bf16_inexact} value(s) not exactly representable in bfloat16")
    if settings.precision == "binary" and acc.padding_bits:
        _layout_problem(report, f"{acc.padding_bits} row(s) with bits set past dim {meta.dim}")


def _decode_checks(report, settings, acc: _Accumulator, rows) -> None:
    add = report.checks.append
    compared = f"{acc.ref_compared} of {rows} rows compared with the float32 file by id"
    if acc.ref_misaligned:
        compared += f" ({acc.ref_misaligned} rows not aligned with it)"
    if acc.ref_compared == 0:
        report.not_run.append({"name": "decode and drift", "reason": "no row lines up with the float32 file"})
        return
    mean = acc.cos_sum / max(acc.ref_compared - acc.cos_excluded, 1)
    names = ids_at_positions(report.file, [acc.cos_min_position])
    if settings.precision == "int8":
        within = acc.values_agree / max(acc.values_compared, 1)
        add(at_least("int8_decode", within, "int8_decode.within_bucket",
                     f"share of dequantized values within half a bucket of the float32 value "
                     f"(largest error {acc.int8_max_error_buckets:.2f} buckets); {compared}"))
    elif settings.precision == "binary":
        agreement = acc.values_agree / max(acc.values_compared, 1)
        add(at_least("binary_decode", agreement, "binary_decode.sign_agreement",
                     f"share of bits equal to (float32 value > 0); {compared}"))
    scoring = {"int8": "dequantized", "binary": "unpacked to +-1"}.get(settings.precision, "as float32")
    add(at_least("drift_mean_cosine", mean, "drift.mean_cosine",
                 f"cosine of each row ({scoring}) with its float32 row; {compared}"
                 + (f"; {acc.cos_excluded} zero or non-finite rows left out" if acc.cos_excluded else "")))
    if math.isfinite(acc.cos_min):
        add(at_least("drift_min_cosine", acc.cos_min, "drift.min_cosine",
                     f"lowest at {_examples([acc.cos_min_position], names)}"))


def _model_checks(report, settings, probe: Probes, acc: _Accumulator, embed_record, meta) -> None:
    add = report.checks.append
    documents = probe.select("document")
    compared = [
        (chunk_id, vector)
        for chunk_id, vector, is_doc in zip(probe.ids, probe.vectors, documents)
        if is_doc and chunk_id in acc.doc_vectors
    ]
    if not compared:
        report.not_run.append({"name": "model_reproduces", "reason": "no re-encoded chunk in the probes file "
                               "lines up with a float32 row (verify.reencode_rows: 0?)"})
    elif probe.dim != meta.dim:
        report.not_run.append({"name": "model_reproduces", "reason": f"the model gives {probe.dim} dims, "
                               f"the file has {meta.dim}"})
    else:
        cosines, _ = row_cosines(np.vstack([v for _, v in compared]), np.vstack([acc.doc_vectors[i] for i, _ in compared]))
        cosines = np.nan_to_num(cosines, nan=-1.0)
        lowest = int(np.argmin(cosines))
        add(at_least("model_reproduces", float(cosines.min()), "model_reproduces",
                     f"{len(compared)} chunks re-encoded by the configured model (rule probe) against their "
                     f"stored float32 rows: min cosine (at id {compared[lowest][0]!r}), mean {cosines.mean():.6f}"))
    if settings.model.get("adapter"):
        applied_probe = bool(probe.info.get("adapter_applied"))
        applied_embed = bool(embed_record.get("model", {}).get("adapter_applied"))
        if not (applied_probe and applied_embed) or probe.without_adapter is None:
            add(equals("adapter", "not applied", "applied",
                      f"adapter {settings.model['adapter']}: applied by embed: {applied_embed}; "
                      f"by probe: {applied_probe}"))
        else:
            cosines, _ = row_cosines(probe.vectors, probe.without_adapter)
            cosines = np.nan_to_num(cosines, nan=1.0)
            add(at_most("adapter", float(cosines.max()), "adapter_max_cosine",
                        f"cosine of {len(cosines)} probe texts with / without adapter {settings.model['adapter']}: "
                        f"max (the least changed) shown, mean {cosines.mean():.6f}, min {cosines.min():.6f}"))


# --- pass two: neighbours -------------------------------------------------------


@dataclass
class _Neighbours:
    k: int
    own: TopK | None
    reference: TopK | None
    self_scores: np.ndarray
    best_other: np.ndarray
    queries_own: TopK
    queries_reference: TopK | None


def _pass_two(parquet, reference, settings, meta, ranges, probe: Probes, sample_positions, sample_vectors,
              sample_reference, text_fp, report) -> _Neighbours | None:
    rows = parquet.metadata.num_rows
    queries = probe.vectors[probe.select("query")]
    query_ok = probe.dim == meta.dim and len(queries) > 0
    if not query_ok:
        report.not_run.append({"name": "spot_check", "reason": f"the model gives {probe.dim} dims, "
                               f"the file has {meta.dim}"})
    k = min(NEIGHBOURS, rows - 1)
    spot_k = min(int(settings.checks["spot_check_k"]), rows)
    sample = unit_rows(sample_vectors)
    sample_ref = unit_rows(sample_reference) if sample_reference is not None else None
    sample_text = text_fp[sample_positions] if len(text_fp) == rows else np.zeros(len(sample_positions), np.uint64)
    result = _Neighbours(
        k=k,
        own=TopK(len(sample), k) if k > 0 else None,
        reference=TopK(len(sample), k) if k > 0 and sample_ref is not None else None,
        self_scores=(sample * sample).sum(1),
        best_other=np.full(len(sample), -np.inf, dtype=np.float32),
        queries_own=TopK(len(queries) if query_ok else 0, spot_k),
        queries_reference=TopK(len(queries), spot_k) if query_ok and reference is not None else None,
    )
    query_unit = unit_rows(queries) if query_ok else None
    reference_file = _open(reference) if reference is not None else None
    try:
        right = _batches(reference_file, settings.batch_rows, True) if reference_file is not None else None
        offset = 0
        for batch, ref in aligned(_batches(parquet, settings.batch_rows, True), right):
            count = len(batch.vectors)
            vectors = unit_rows(to_float32(batch.vectors, settings.precision, meta.dim, ranges))
            ref_vectors = None
            if ref is not None and len(ref.vectors) == count:
                ref_vectors = unit_rows(ref.vectors.astype(np.float32, copy=False))
            # Score matrices (sample rows x columns) a block of columns at a time, so that
            # memory does not grow with batch_rows.
            for start in range(0, count, SCORE_BLOCK):
                stop = min(start + SCORE_BLOCK, count)
                at = offset + start
                here = (sample_positions >= at) & (sample_positions < offset + stop)
                self_rows, self_cols = np.flatnonzero(here), sample_positions[here] - at
                scores = sample @ vectors[start:stop].T
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
    finally:
        if reference_file is not None:
            reference_file.close()
    return result


def _neighbour_checks(report, n: _Neighbours, derived, reference_aligned) -> None:
    add = report.checks.append
    sample = len(n.self_scores)
    if sample:
        found = (n.self_scores > 0) & (n.best_other < n.self_scores - 1e-6)
        rate = float(found.mean())
        add(at_least("self_retrieval", rate, "self_retrieval",
                     f"{int(found.sum())} of {sample} sampled rows have themselves as nearest neighbour "
                     "(rows with an identical text excepted)"))
    if derived:
        if n.own is None or n.reference is None or not reference_aligned:
            report.not_run.append({"name": "top10_overlap", "reason": "rows do not line up with the float32 file"
                                   if not reference_aligned else "fewer than 2 rows"})
            return
        own, ref = n.own.index, n.reference.index
        overlap = np.array([len(set(a) & set(b)) for a, b in zip(own.tolist(), ref.tolist())]) / n.k
        add(at_least("top10_overlap", float(overlap.mean()), "drift.top10_overlap",
                     f"share of each sampled row's {n.k} nearest neighbours (itself excluded) that are also its "
                     f"float32 neighbours; mean over {sample} rows, lowest {overlap.min():.2f}"))


def texts_at_positions(path, text_field: str, positions) -> dict[int, str]:
    """Texts of the chunks at a few positions of the chunks file. JSON Lines: only those lines
    are parsed (blank lines do not count, as in ``chunks.iter_chunks``)."""
    wanted = set(positions)
    found: dict[int, str] = {}
    if not wanted:
        return found
    if not is_json_lines(path):
        return {chunk.position: chunk.text for chunk in iter_chunks(path, text_field, wanted)}
    position, last = 0, max(wanted)
    with open(path, "rb") as handle:
        handle.seek(bom_length(path))
        for raw in handle:
            # Blank as chunks.iter_chunks counts it; a line that is not UTF-8 (rejected) is not.
            if not raw.decode("utf-8", errors="replace").strip():
                continue
            if position in wanted:
                found[position] = json.loads(raw.decode("utf-8"))[text_field]
            position += 1
            if position > last:
                break
    return found


def _spot_check(parquet_path, chunks, text_field, probe: Probes, n: _Neighbours, settings, chunk_positions,
                skip=()) -> dict:
    scores, index = n.queries_own.ranked()
    reference_hits = None
    if n.queries_reference is not None:
        reference_hits = [set(row) for row in n.queries_reference.ranked()[1].tolist()]
    ids = ids_at_positions(parquet_path, index.ravel())
    if chunk_positions is not None:  # rows in the order of the chunks: read just those chunks
        at = texts_at_positions(chunks, text_field, [chunk_positions(int(row)) for row in ids])
        texts = {ids[row]: at.get(chunk_positions(int(row)), "") for row in ids}
    else:
        texts = find_texts(chunks, text_field, set(ids.values()), skip)
    queries = [text for text, kind in zip(probe.texts, probe.kinds) if kind == "query"]
    result = []
    for q, query in enumerate(queries[: len(scores)]):
        hits = []
        for rank, (score, position) in enumerate(zip(scores[q], index[q]), start=1):
            if position < 0:
                continue
            chunk_id = ids.get(int(position))
            hit = {
                "rank": rank,
                "id": chunk_id,
                "score": float(score),
                "first_words": _first_words(texts.get(chunk_id, "")),
            }
            if reference_hits is not None:
                hit["in_float32_top"] = int(position) in reference_hits[q]
            hits.append(hit)
        result.append({"query": query, "hits": hits})
    agreement = None
    if reference_hits is not None and len(scores):
        agreement = float(np.mean([
            len(set(index[q].tolist()) & reference_hits[q]) / max(len(reference_hits[q]), 1)
            for q in range(len(scores))
        ]))
    sample = len(n.self_scores)
    found = (n.self_scores > 0) & (n.best_other < n.self_scores - 1e-6)
    return {
        "query_prompt": probe.info.get("query_prompt"),
        "scoring": {
            "int8": "cosine of the float32 query with the dequantized rows",
            "binary": "cosine of the float32 query with the rows unpacked to +-1",
        }.get(settings.precision, "cosine of the float32 query with the rows"),
        "k": n.queries_own.k,
        "queries": result,
        "agreement_with_float32": agreement,
        "self_retrieval": {"sample_rows": sample, "rate": float(found.mean()) if sample else None},
    }


# --- Markdown ---------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            text = f"{value:.6f}"
            # strip trailing zeros only where nothing was rounded away (0.99999994 shows 1.000000)
            exact = abs(float(text) - value) <= 1e-12 * max(1.0, abs(value))
            return text.rstrip("0").rstrip(".") if exact else text
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_fmt(item)}" for key, item in value.items())
    return str(value)


def _threshold(threshold) -> str:
    if not isinstance(threshold, dict):
        return _fmt(threshold)
    if "fail_below" in threshold:
        text = f"≥ {_fmt(threshold['fail_below'])}"
        if threshold["warn_below"] != threshold["fail_below"]:
            text += f" (warn < {_fmt(threshold['warn_below'])})"
        return text
    if "fail_above" in threshold:
        text = f"≤ {_fmt(threshold['fail_above'])}"
        if threshold["warn_above"] != threshold["fail_above"]:
            text += f" (warn > {_fmt(threshold['warn_above'])})"
        return text
    if "equals" in threshold:
        expected = threshold["equals"]
        if isinstance(expected, str) and len(expected) == 64:
            expected = expected[:12] + "…"
        return f"= {_fmt(expected)}"
    return _fmt(threshold)


def _value(check: Check) -> str:
    value = check.value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        value = value[:12] + "…"  # a sha256
    text = _fmt(value)
    return f"{text} {check.unit}" if check.unit else text


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


STATUS_MARK = {PASS: "pass", WARN: "**WARN**", FAIL: "**FAIL**"}


def checks_table(checks: list[Check]) -> str:
    lines = ["| check | status | value | threshold |", "|---|---|---|---|"]
    lines += [
        f"| {check.name} | {STATUS_MARK[check.status]} | {_cell(_value(check))} | {_cell(_threshold(check.threshold))} |"
        for check in checks
    ]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    summary = report.summary
    out = [
        f"# Verify: {report.model} / {report.precision}: {report.status.upper()}",
        "",
        f"`{report.file}`: {summary.get('rows', '?')} rows x {summary.get('dim', '?')} dims, "
        f"{report.precision}; {len(report.failing())} failing, "
        f"{sum(c.status == WARN for c in report.checks)} warning, "
        f"{sum(c.status == PASS for c in report.checks)} passing checks; "
        f"verified in {summary.get('seconds', '?')} s."
        + (f" {summary['chunks_rejected']} chunk(s) of the chunks file were rejected (on_bad_chunk: skip) "
           "and are not in it." if summary.get("chunks_rejected") else ""),
        "",
        "## Checks",
        "",
        checks_table(report.checks),
        "",
        "### Details",
        "",
    ]
    out += [f"- **{check.name}** ({check.status}): {check.detail}" for check in report.checks if check.detail]
    if report.not_run:
        out += ["", "Not run:", ""]
        out += [f"- {item['name']}: {item['reason']}" for item in report.not_run]
    spot = report.spot_check
    if spot:
        prompt = spot.get("query_prompt")
        out += [
            "",
            "## Spot check",
            "",
            f"Probe queries encoded with the model's query prompt ({'none' if not prompt else repr(prompt)}); "
            f"score: {spot['scoring']}.",
        ]
        if spot.get("agreement_with_float32") is not None:
            out.append(f"Agreement of these top-{spot['k']} lists with the float32 file's: "
                       f"{_fmt(spot['agreement_with_float32'])}.")
        retrieval = spot.get("self_retrieval", {})
        if retrieval.get("rate") is not None:
            out.append(f"Self-retrieval on {retrieval['sample_rows']} sampled rows: {retrieval['rate']:.1%}.")
        for entry in spot["queries"]:
            with_reference = any("in_float32_top" in hit for hit in entry["hits"])
            out += ["", f"### “{_cell(entry['query'])}”", ""]
            header = "| rank | id | score | first words |" + (" in float32 top |" if with_reference else "")
            out += [header, "|---|---|---|---|" + ("---|" if with_reference else "")]
            for hit in entry["hits"]:
                row = f"| {hit['rank']} | `{_cell(hit['id'])}` | {hit['score']:.3f} | {_cell(hit['first_words'])} |"
                if with_reference:
                    row += f" {'yes' if hit.get('in_float32_top') else 'no'} |"
                out.append(row)
    return "\n".join(out) + "\n"


# --- the rule -----------------------------------------------------------------------


def measure_main(snakemake) -> None:
    """Rule ``measure``: every measurement, kept as <model>_<precision>.measures.json."""
    timer = Timer()
    runtime = params_json(snakemake, "runtime")
    settings = VerifySettings(
        model_key=snakemake.wildcards.model,
        precision=snakemake.wildcards.precision,
        model=params_json(snakemake, "model"),
        selection=params_json(snakemake, "selection"),
        checks=params_json(snakemake, "sampling"),
        batch_rows=runtime["batch_rows"],
    )
    report = measure_embeddings(
        snakemake.input.parquet,
        chunks=snakemake.input.chunks,
        provenance=snakemake.input.provenance,
        embed_provenance=snakemake.input.embed_provenance,
        probes=snakemake.input.probes,
        settings=settings,
        reference=snakemake.input.get("reference") or None,
        rejected=snakemake.input.rejected,
    )
    timer.stop()
    for check in report.checks:
        log.info("%-18s %s", check.name, _value(check))
    for item in report.not_run:
        log.warning("not run: %s: %s", item["name"], item["reason"])
    Path(snakemake.output.measures).write_text(json.dumps(report.to_measurements(), indent=1) + "\n")
    write_provenance(
        snakemake.output.measures,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={
            "model": settings.model,
            "selection": settings.selection,
            "sampling": settings.checks,
            "runtime (does not change the output)": runtime,
        },
        inputs=[path for path in snakemake.input if path],
        timing=timer.record(report.summary.get("rows")),
    )
    log.info("measured %s in %.1f s", snakemake.input.parquet, timer.seconds)


def verify_main(snakemake) -> None:
    """Rule ``verify``: judge the measurements; write the report, or fail with the findings."""
    timer = Timer()
    thresholds = params_json(snakemake, "thresholds")
    record = json.loads(Path(snakemake.input.measures).read_text())
    report = judge(Report.from_measurements(record), thresholds)
    timer.stop()
    label = f"{report.model} / {report.precision}"
    for check in report.checks:
        level = {PASS: logging.INFO, WARN: logging.WARNING, FAIL: logging.ERROR}[check.status]
        log.log(level, "%-18s %-4s %s (threshold %s)", check.name, check.status, _value(check),
                _threshold(check.threshold))
    failing = report.failing()
    if failing:
        log.error("verify %s FAILED; the failing checks:\n%s\n\n%s", label, checks_table(failing),
                  "\n".join(f"- {check.name}: {check.detail}" for check in failing))
        with open(snakemake.log[0], "a", encoding="utf-8") as handle:  # the log only, not the terminal
            handle.write("\nThe whole report (no report file is written, so nothing downstream runs):\n\n")
            handle.write(report.to_markdown())
        raise UserError(
            f"verify {label}: {len(failing)} check(s) failed: {', '.join(c.name for c in failing)}; "
            f"findings in {snakemake.log[0]}"
        )
    Path(snakemake.output.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    Path(snakemake.output.markdown).write_text(report.to_markdown())
    extra = {"verify": {"status": report.status, "checks": {c.name: c.status for c in report.checks}}}
    for output in (snakemake.output.report, snakemake.output.markdown):
        write_provenance(output, rule=snakemake.rule, wildcards=dict(snakemake.wildcards),
                         config={"thresholds": thresholds}, inputs=[snakemake.input.measures],
                         timing=timer.record(), extra=extra)
    log.info("verify %s: %s (%s)", label, report.status, snakemake.output.report)


def run_measure(snakemake) -> None:
    run_rule(snakemake, measure_main)


def run(snakemake) -> None:
    run_rule(snakemake, verify_main)
