"""Stage ``convert``: float32 embeddings → float16 | bfloat16 | int8 | binary, on the CPU.

int8 needs the corpus's own per-dimension ranges, so its source is read
twice: once to calibrate, once to quantize. Both passes stream row groups.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from embedflow.embeddings_file import EmbeddingsWriter, iter_batches, read_metadata
from embedflow.errors import InputError
from embedflow.precision import DERIVED_PRECISIONS, SOURCE_PRECISION, Int8Ranges, convert
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import run_rule

log = logging.getLogger(__name__)


def calibrate_int8(source: str | Path, dim: int) -> Int8Ranges:
    ranges = Int8Ranges(dim)
    for batch in iter_batches(source):
        ranges.update(batch.vectors)
    return ranges


def convert_file(source: str | Path, output: str | Path, precision: str) -> int:
    """Write ``output`` in ``precision`` from a float32 file; returns the row count."""
    if precision not in DERIVED_PRECISIONS:
        raise InputError(f"cannot convert to {precision!r}; derived precisions: {DERIVED_PRECISIONS}")
    meta = read_metadata(source)
    if meta.precision != SOURCE_PRECISION:
        raise InputError(f"{source}: holds {meta.precision} embeddings, expected {SOURCE_PRECISION}")
    ranges = None
    if precision == "int8":
        ranges = calibrate_int8(source, meta.dim).array()
        log.info("int8 ranges calibrated on the corpus's float32 embeddings (%d dims)", meta.dim)
    target = replace(meta, precision=precision, int8_ranges=None if ranges is None else ranges.tolist())
    with EmbeddingsWriter(output, target) as writer:
        for batch in iter_batches(source):
            writer.write(batch.ids, convert(batch.vectors, precision, ranges), batch.hashes)
    log.info("wrote %s: %d rows, %s", output, writer.rows, precision)
    return writer.rows


def main(snakemake) -> None:
    timer = Timer()
    precision = snakemake.wildcards.precision
    rows = convert_file(snakemake.input.parquet, snakemake.output.parquet, precision)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"precision": precision},
        inputs=[snakemake.input.parquet],
        timing=timer.stop().record(rows),
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
