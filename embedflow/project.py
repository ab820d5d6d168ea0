"""Stage ``project``: a truncate_dim or pca variant's files, from its base's.

A variant runs no model. Rule ``project`` streams the base's float32 corpus
file through the variant's ``Projection`` (``embedflow.projection``: reduce,
then re-normalize); ``project_queries`` does the same to the base's query
vectors and ``project_probes`` to the base's probes file, so the variant's
corpus, queries and probes all get one treatment, from one model pass.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from embedflow.embeddings_file import EmbeddingsWriter, iter_batches, read_metadata
from embedflow.errors import InputError
from embedflow.probes_file import read_probes, write_probes
from embedflow.projection import Projection, for_variant
from embedflow.provenance import Timer, read_provenance, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.variants import reduction_of, variant_record

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


def project_probes(source: str | Path, output: str | Path, model_key: str, variant: dict,
                   projection: Projection) -> int:
    """Write the variant's probes file from the base's; returns the row count. Its
    re-encoded chunks are the variant's first float32 rows too: project keeps the order."""
    probes = read_probes(source)
    projection.check_input(probes.dim, f"{source} -> {output}")
    info = {**probes.info, "model": model_key, "dim": projection.dim, "normalize": True,
            "reduction": reduction_of(variant)}
    if variant["way"] == "truncate_dim":
        info["truncate_dim"] = projection.dim
    without = probes.without_adapter
    write_probes(output, replace(probes, info=info, vectors=projection.apply(probes.vectors),
                                 without_adapter=None if without is None else projection.apply(without)))
    return len(probes.texts)


def _main(snakemake) -> None:
    timer = Timer()
    model = params_json(snakemake, "model")
    variant = model["variant"]
    projection = for_variant(variant)
    probes = snakemake.rule == "project_probes"
    source, output = (snakemake.input.probes, snakemake.output.probes) if probes else (
        snakemake.input.parquet, snakemake.output.parquet)
    rows = (project_probes if probes else project_file)(source, output, snakemake.wildcards.model, variant,
                                                        projection)
    log.info("wrote %s: %d rows, %s of %s to %d dims, re-normalized", output, rows, variant["way"],
             variant["base"], projection.dim)
    base_record = read_provenance(source)
    carried = {key: base_record[key] for key in ("corpus",) if base_record.get(key) is not None}
    write_provenance(
        output,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model},
        inputs=list(snakemake.input),
        timing=timer.stop().record(rows),
        # the base's encoder (its identity_key: the cache entries these rows came from), reduced
        model={**(base_record.get("model") or {}), "variant": variant_record(variant)},
        extra={
            **carried,
            "embedding": {"dim": projection.dim, "normalized": True},
            "variant": variant,
        },
    )


def run(snakemake) -> None:
    """Rules ``project``, ``project_queries`` and ``project_probes``."""
    run_rule(snakemake, _main)
