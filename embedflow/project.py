"""Stage ``project``: a truncate_dim or pca variant's float32 file, from its base's.

Streams the base model's float32 file through the variant's ``Projection``
(``embedflow.projection``: reduce, then re-normalize), as the encoder does for
the variant's queries and probes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from embedflow.embeddings_file import EmbeddingsWriter, iter_batches, read_metadata
from embedflow.errors import InputError
from embedflow.projection import Projection, for_variant
from embedflow.provenance import Timer, read_provenance, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.variants import reduction_of

log = logging.getLogger(__name__)


def project_file(source: str | Path, output: str | Path, model_key: str, variant: dict,
                 projection: Projection) -> int:
    """Write the variant's float32 file from the base's; returns the row count."""
    meta = read_metadata(source)
    if meta.precision != "float32":
        raise InputError(f"{source}: holds {meta.precision} embeddings; variants derive from float32")
    projection.check_input(meta.dim, f"{source} -> {output}")
    target = replace(meta, model=model_key, dim=projection.dim, normalized=True,
                     reduction=reduction_of(variant))
    with EmbeddingsWriter(output, target) as writer:
        for batch in iter_batches(source):
            writer.write(batch.ids, projection.apply(batch.vectors), batch.hashes)
    return writer.rows


def _main(snakemake) -> None:
    timer = Timer()
    model = params_json(snakemake, "model")
    variant = model["variant"]
    projection = for_variant(variant)
    rows = project_file(snakemake.input.parquet, snakemake.output.parquet, snakemake.wildcards.model,
                        variant, projection)
    log.info("wrote %s: %d rows, %s of %s to %d dims, re-normalized", snakemake.output.parquet, rows,
             variant["way"], variant["base"], projection.dim)
    base_record = read_provenance(snakemake.input.parquet)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model},
        inputs=list(snakemake.input),
        timing=timer.stop().record(rows),
        model=base_record.get("model"),
        extra={
            "corpus": base_record.get("corpus"),
            "embedding": {"dim": projection.dim, "normalized": True},
            "variant": variant,
        },
    )


def run(snakemake) -> None:
    """Rule ``project``."""
    run_rule(snakemake, _main)
