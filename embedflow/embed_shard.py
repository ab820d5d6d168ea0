"""Rule ``embed``: one shard of the corpus → its part, ``results/embeddings/shards/<model>/<shard>.parquet``.

Checkpoint ``shard_plan`` cut the selected chunks into windows and shards by
content (``embedflow.shards``); a job encodes one shard, window by window as
the plan cut it (``embed.embed_windows``: from the vector cache where it has
them, a window's new vectors kept as soon as they are encoded), on the GPU
slot it holds (``device_slots.run_model_rule``). The shard is checked
against the chunks file before any model work. Rule ``gather`` streams the
parts into ``embeddings_<model>_float32.parquet``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TextIO

from embedflow.embed import EmbedResult, EmbedSettings, embed_windows, record_run
from embedflow.provenance import encoder_usage, torch_device_info, write_provenance
from embedflow.shards import Shard, ShardPlan, check_shard, read_plan, shard_pairs, split_windows
from embedflow.device_slots import run_model_rule
from embedflow.snakemake_rule import params_json

log = logging.getLogger(__name__)


def embed_shard(chunks_path: str | Path, plan: ShardPlan, shard: Shard, output: str | Path,
                settings: EmbedSettings, progress: TextIO | None = None) -> EmbedResult:
    """One shard of a plan. Its part's metadata names the shard's content digest where a whole
    file names the corpus's (rule gather writes that)."""
    check_shard(chunks_path, plan, shard)
    log.info("%s: shard %s, %d chunks in %d window(s), %r to %r (field %r)", chunks_path, shard.name,
             shard.rows, len(shard.windows), shard.first_id, shard.last_id, plan.text_field)
    windows = split_windows(shard_pairs(chunks_path, plan, shard), shard.windows)
    rows, encoder, record, timer = embed_windows(windows, output, settings, shard.sha256, shard.rows, progress,
                                                 chunks_path)
    return EmbedResult(rows, plan.corpus["chunks"], plan.corpus["sha256"], encoder, timer,
                       plan.corpus["rejected"], record)


def shard_record(shard: Shard, result: EmbedResult) -> dict:
    """What the part's provenance says of the shard and of the work: rows, encoded against
    reused, texts and tokens per second of the model."""
    work = result.cache
    return {"name": shard.name, "sha256": shard.sha256, "windows": len(shard.windows),
            "first_id": shard.first_id, "last_id": shard.last_id, "rows": result.rows,
            "encoded": work["rows_encoded"], "reused": work["rows_reused"], "texts_encoded": work["texts_encoded"],
            "model_seconds": work["model_seconds"], "texts_per_second": work["texts_per_second"],
            "tokens_per_second": work["tokens_per_second"]}


def main(snakemake) -> None:
    model = params_json(snakemake, "model")
    runtime = params_json(snakemake, "runtime")  # its device: the GPU slot's (run_model_rule)
    cache = params_json(snakemake, "cache")
    plan = read_plan(snakemake.input.plan)
    shard = plan.shard(snakemake.wildcards.shard)
    settings = EmbedSettings(
        model_key=snakemake.wildcards.model,
        model={**model, **runtime["model"]},
        text_field=plan.text_field,
        batch_size=runtime["model"]["batch_size"],
        device=runtime["device"],
        require_cuda=runtime["require_cuda"],
        threads=snakemake.threads,
        window_rows=plan.window_rows,
        cache_path=cache["path"],
    )
    with open(snakemake.log[0], "a", encoding="utf-8") as progress:
        result = embed_shard(snakemake.input.chunks, plan, shard, snakemake.output.parquet, settings, progress)
    if result.cache.get("path"):
        record_run(settings, result)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model, "runtime (does not change the output)": {**runtime, "cache": cache}},
        inputs=list(snakemake.input),
        timing=result.timer.record(result.rows, unit="chunks"),
        device={
            **torch_device_info(result.encoder.device),
            "compute_precision": result.encoder.compute_precision,
            "tf32": result.encoder.tf32,
        },
        model=result.encoder.identity,
        extra={
            "shard": shard_record(shard, result),
            "corpus": {"path": str(snakemake.input.chunks), "text_field": plan.text_field},
            "embedding": {
                "dim": result.encoder.dim,
                "normalized": result.encoder.normalize,
                "max_seq_length": result.encoder.max_seq_length,
                "truncated_chunks": result.encoder.truncated_texts,  # of the texts this job encoded
            },
            "cache": result.cache,
            **encoder_usage(result.encoder),
        },
    )


def run(snakemake) -> None:
    run_model_rule(snakemake, main)
