"""Rule ``measure``: every measurement on one embeddings file, kept as ``<model>_<precision>.measures.json``.

``measure_embeddings`` reads the file with the chunks file, the provenance
records, the probes file of the model (rule ``probe``) and, for a derived
precision, the float32 file it was made from; it returns a ``Report`` whose
checks hold a measured value and how to judge it, plus the spot check.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedflow.embeddings_file import EmbeddingsMetadata
from embedflow.errors import UserError
from embedflow.hashing import sha256_file
from embedflow.precision import SOURCE_PRECISION
from embedflow.probes_file import Probes, read_probes
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.verify.decode_checks import decode_checks
from embedflow.verify.file_checks import (
    dim_check, key_columns_usable, layout_check, metadata_check, provenance_check, read_record,
)
from embedflow.rejected import rejected_positions
from embedflow.verify.fingerprints import ChunkSelection, select_chunks
from embedflow.verify.id_checks import chunks_sha256_check, id_checks, text_hash_check
from embedflow.verify.markdown import format_value
from embedflow.verify.model_checks import model_checks
from embedflow.verify.neighbour_checks import neighbour_checks, spot_check
from embedflow.verify.passes import Figures, Sample, Stream, fingerprints_only, pass_one, pass_two, rows_only
from embedflow.verify.report import Report, VerifySettings, equals, judge
from embedflow.verify.vector_checks import vector_checks

log = logging.getLogger(__name__)

# Checks that read the id / text_sha256 columns.
KEYED_CHECKS = ("row_count", "ids_unique", "ids_match", "ids_order", "text_hashes")
STREAMED_CHECKS = ("finite", "zero_vectors", "norms", "drift", "neighbours", "spot_check")


def verify_embeddings(parquet_path: str | Path, *, settings: VerifySettings, **inputs) -> Report:
    """Measure and judge one embeddings file (``measure_embeddings``, then ``judge``)."""
    return judge(measure_embeddings(parquet_path, settings=settings, **inputs), settings.checks["thresholds"])


@dataclass(frozen=True)
class _Inputs:
    """What measure reads beside the embeddings file."""

    selection: ChunkSelection
    probe: Probes
    file_record: dict  # the embeddings file's provenance
    embed_record: dict  # the float32 file's (rule embed)


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
    """Every measurement on one embeddings file; see the package docstring. ``rejected``: rule
    preflight's list of the chunks left out (on_bad_chunk: skip), which embed skipped too."""
    started = time.perf_counter()
    report = Report(settings.model_key, settings.precision, str(parquet_path))
    file_record = read_record(provenance)
    embed_record = read_record(embed_provenance)
    probe = read_probes(probes)
    derived = settings.precision != SOURCE_PRECISION
    if derived and reference is None:
        raise UserError(f"verify of {settings.precision} needs the float32 file it was derived from")
    selection = select_chunks(chunks, settings.selection, rejected_positions(rejected))
    inputs = _Inputs(selection, probe, file_record, embed_record)

    try:
        with pq.ParquetFile(parquet_path) as parquet:
            schema, footer = parquet.schema_arrow, parquet.metadata
        meta = EmbeddingsMetadata.from_parquet(schema.metadata, str(parquet_path))
    except (OSError, pa.ArrowException, UserError, ValueError, TypeError) as error:
        report.checks.append(equals("parquet_readable", "cannot open", "reads end to end", f"cannot open: {error}"))
        report.checks.append(chunks_sha256_check(inputs.selection.corpus, embed_record, None))
        report.summary = {"seconds": round(time.perf_counter() - started, 3)}
        return report

    stream = Stream(parquet_path, settings, meta, footer.num_rows,
                    meta.ranges_array() if settings.precision == "int8" else None, reference if derived else None)
    file_sha256 = sha256_file(parquet_path)
    file_bytes = Path(parquet_path).stat().st_size
    report.checks.append(provenance_check(settings, file_record, embed_record, file_sha256, file_bytes, derived))
    report.checks.append(metadata_check(settings, meta, embed_record))
    layout, decodable = layout_check(settings, meta, schema)
    report.checks.append(layout)
    report.checks.append(dim_check(settings, meta, probe))
    sample = Sample.draw(stream.rows, meta.dim, settings.checks, derived)
    found = Figures(doc_ids={i for i, kind in zip(probe.ids, probe.kinds) if kind == "document" and i is not None})
    keyed = key_columns_usable(schema)
    readable = _read_through(report, stream, sample, found, decodable, keyed, footer, file_bytes)
    if keyed:
        _id_and_text_checks(report, inputs, meta, found)
    else:
        report.checks.append(chunks_sha256_check(inputs.selection.corpus, inputs.embed_record, meta))
        for name in KEYED_CHECKS:
            report.not_run.append({"name": name, "reason": "the file has no usable id / text_sha256 "
                                   "column (see layout)"})

    if not decodable or not readable:
        for name in STREAMED_CHECKS:
            report.not_run.append({"name": name, "reason": "the file cannot be decoded or read "
                                   "(see layout / parquet_readable)"})
    else:
        _streamed_checks(report, inputs, stream, sample, found)

    seconds = time.perf_counter() - started
    report.summary = {
        "rows": stream.rows,
        "dim": meta.dim,
        "precision": settings.precision,
        "bytes": file_bytes,
        "sha256": file_sha256,
        "chunks_selected": len(inputs.selection.expected.ids),
        "chunks_rejected": len(inputs.selection.skip),
        "sample_rows": len(sample.positions),
        "seconds": round(seconds, 3),
        "rows_per_second": round(stream.rows / seconds, 1) if seconds > 0 else None,
    }
    return report


def _read_through(report: Report, stream: Stream, sample: Sample, found: Figures, decodable: bool,
                  keyed: bool, footer: pq.FileMetaData, file_bytes: int) -> bool:
    """Pass one (fingerprints only when the vectors cannot be decoded); the ``parquet_readable``
    check, first in the report; whether every row was read."""
    rows, read_error = stream.rows, None
    try:
        if decodable:
            pass_one(stream, sample, found)
        elif keyed:
            fingerprints_only(stream, found)
        else:
            rows_only(stream, found)
    except (OSError, pa.ArrowException) as error:
        read_error = f"row {found.rows}: {error}"
    readable = read_error is None and found.rows == rows
    report.checks.insert(0, equals(
        "parquet_readable",
        f"{found.rows} of {rows} rows" if readable else f"stopped at row {found.rows} of {rows}",
        f"{rows} of {rows} rows",
        read_error or f"{footer.num_row_groups} row groups, {file_bytes} bytes",
    ))
    return readable


def _id_and_text_checks(report: Report, inputs: _Inputs, meta: EmbeddingsMetadata, found: Figures) -> None:
    file_fp = found.fingerprints()
    id_checks(report, inputs.selection, file_fp, inputs.embed_record)
    report.checks.append(chunks_sha256_check(inputs.selection.corpus, inputs.embed_record, meta))
    report.checks.append(text_hash_check(report.file, file_fp, inputs.selection.expected))


def _streamed_checks(report: Report, inputs: _Inputs, stream: Stream, sample: Sample, found: Figures) -> None:
    """The checks of a file that decodes and reads end to end: from pass one's figures, then pass two."""
    settings, meta, rows, probe = stream.settings, stream.meta, stream.rows, inputs.probe
    derived = stream.reference is not None
    vector_checks(report, settings, meta, found)
    if derived:
        decode_checks(report, settings, found, rows)
    model_checks(report, settings, probe, found, inputs.embed_record, meta)
    # Rows are compared with float32 rows by position only when every id lines up.
    ids_match_reference = derived and found.ref_misaligned == 0 and found.ref_compared == rows
    if not ids_match_reference:
        stream, sample = replace(stream, reference=None), replace(sample, reference=None)
    file_fp = found.fingerprints()
    neighbours = pass_two(stream, probe, sample, file_fp.texts)
    if not neighbours.queries_scored:
        report.not_run.append({"name": "spot_check", "reason": f"the model gives {probe.dim} dims, "
                               f"the file has {meta.dim}"})
    neighbour_checks(report, neighbours, derived, ids_match_reference)
    in_order = np.array_equal(file_fp.ids, inputs.selection.expected.ids)
    report.spot_check = spot_check(report.file, inputs.selection, probe, neighbours, settings.precision, in_order)


def _main(snakemake) -> None:
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
        log.info("%-18s %s", check.name, format_value(check))
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


def run(snakemake) -> None:
    """Rule ``measure``."""
    run_rule(snakemake, _main)
