"""Rule ``gather``: the parts of a model's shards → ``embeddings_<model>_float32.parquet``.

The parts are read in the plan's order, one row group (one window) at a time,
and written as the same row groups into one file, so memory holds one window
and the file is the same bytes whatever the shard count: its windows do not
depend on the shards (``embedflow.shards``). Every part must come from the
same model (identity, dim, normalization, compute precision) and hold exactly
its shard of the plan (content digest, rows); the file's metadata then names
the corpus. The rest of the chain reads only this file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from embedflow.embeddings_file import EmbeddingsWriter, iter_row_groups, read_metadata
from embedflow.errors import InputError
from embedflow.provenance import Timer, provenance_path, torch_device_info, write_provenance
from embedflow.shards import ShardPlan, read_plan
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)

# Metadata every part of one model must share (what makes vectors comparable).
SHARED_METADATA = ("model", "model_source", "dim", "precision", "normalized", "compute_precision",
                   "text_field", "reduction")


def check_parts(plan: ShardPlan, parts: list[str | Path]) -> list:
    """The parts' metadata, after checking that part i holds shard i and that all agree."""
    if len(parts) != len(plan.shards):
        raise InputError(f"{len(parts)} part(s) for the {len(plan.shards)} shard(s) of the plan")
    metas = [read_metadata(path) for path in parts]
    first = metas[0]
    for path, meta, shard in zip(parts, metas, plan.shards):
        if meta.corpus_sha256 != shard.sha256:
            raise InputError(f"{path}: holds other chunks than shard {shard.name} of the plan; run the workflow again")
        differs = [key for key in SHARED_METADATA if getattr(meta, key) != getattr(first, key)]
        if differs:
            raise InputError(f"{path}: {', '.join(differs)} differ from {parts[0]}'s: the parts of one file "
                             "must come from one model; run the workflow again")
    return metas


def gather_parts(plan: ShardPlan, parts: list[str | Path], output: str | Path) -> int:
    """Stream the parts into one file; returns its rows."""
    metas = check_parts(plan, parts)
    meta = replace(metas[0], corpus_sha256=plan.corpus["sha256"])
    with EmbeddingsWriter(output, meta) as writer:
        for path, shard in zip(parts, plan.shards):
            before = writer.rows
            for table in iter_row_groups(path):
                writer.write_table(table)
            if writer.rows - before != shard.rows:
                raise InputError(f"{path}: {writer.rows - before} rows, shard {shard.name} has {shard.rows}")
    return writer.rows


def shard_records(parts: list[str | Path]) -> list[dict]:
    return [json.loads(provenance_path(path).read_text()) for path in parts]


def _one_model(records: list[dict], parts) -> dict:
    # model_loaded: false where every text of a shard came from the cache (the same model)
    identities = [{k: v for k, v in (record.get("model") or {}).items() if k != "model_loaded"}
                  for record in records]
    for path, identity in zip(parts, identities):
        if identity != identities[0]:
            raise InputError(f"{path}: embedded by another model than {parts[0]} (model identity in their "
                             "provenance differs); run the workflow again")
    return identities[0]


def shard_summary(record: dict) -> dict:
    """One line of the gathered file's provenance per shard: where and how it was embedded."""
    device = record.get("device", {})
    return {**record["shard"], "part": record["output"]["path"], "part_sha256": record["output"]["sha256"],
            "device": device.get("device"), "gpu_name": device.get("gpu_name"), "gpu_slot": device.get("gpu_slot")}


SUMMED = ("rows", "rows_reused", "rows_encoded", "texts_encoded", "tokens_encoded", "model_seconds", "load_seconds",
          "segments_written")


def total_work(records: list[dict], plan: ShardPlan) -> dict:
    """The shards' work records summed: what making the file's parts took, each when it was
    made (with the cache's path and the encoder's identity key, as the parts recorded them)."""
    works = [record.get("cache") or {} for record in records]
    total = {key: sum(work.get(key) or 0 for work in works) for key in SUMMED}
    total["model_seconds"] = round(total["model_seconds"], 3)
    total.update(path=works[0].get("path"), identity_key=works[0].get("identity_key"))
    return total


def work_since(records: list[dict], made_at: str) -> dict:
    """The work of the parts made at or after ``made_at`` (the shard plan's time): what the
    run that followed this corpus edit did, where ``cache`` sums every part as it was made."""
    fresh = [record for record in records if record["timing"]["finished"] >= made_at]
    works = [record.get("cache") or {} for record in fresh]
    total = {key: sum(work.get(key) or 0 for work in works) for key in SUMMED}
    total["model_seconds"] = round(total["model_seconds"], 3)
    return {"shard_plan_made": made_at, "shards_run": len(fresh), **total}


def plan_beside_outcome(records: list[dict], corpus_sha256: str) -> dict:
    """What ``embedflow plan`` predicted (its last results/plan.json, made for this corpus and
    encoder) beside what happened since: the shards embedded after the plan was made encoded
    their misses; the others were not run, their rows counted as cached."""
    from embedflow.cache.runs import prediction_for

    predicted = prediction_for((records[0].get("cache") or {}).get("identity_key"), corpus_sha256)
    if predicted is None:
        return {"predicted": None, "outcome": None, "agree": None}
    ran = [record["timing"]["finished"] >= predicted["planned_at"] for record in records]
    outcome = {
        "cached": sum(r["cache"]["rows_reused"] if now else r["shard"]["rows"] for r, now in zip(records, ran)),
        "to_encode": sum(r["cache"]["texts_encoded"] for r, now in zip(records, ran) if now),
    }
    return {"predicted": predicted, "outcome": outcome, "agree": all(predicted[k] == outcome[k] for k in outcome)}


HTTP_SUMMED = ("requests", "retries", "texts", "tokens_estimated", "tokens_billed", "responses_without_usage")


def summed_http_usage(records: list[dict]) -> dict:
    """An API model's requests, tokens billed and cost over every shard job, as one embed job
    records them under ``http``; {} for a local model (or when no shard called the API)."""
    usages = [record["http"] for record in records if record.get("http")]
    if not usages:
        return {}
    total = {**usages[0], **{key: sum(usage.get(key) or 0 for usage in usages) for key in HTTP_SUMMED}}
    total["served_models"] = sorted({name for usage in usages for name in usage.get("served_models", [])})
    costs = [usage.get("estimated_cost") for usage in usages]
    total["estimated_cost"] = None if None in costs else sum(costs)
    return {"http": total}


def main(snakemake) -> None:
    timer = Timer()
    model = params_json(snakemake, "model")
    selection = params_json(snakemake, "selection")
    plan = read_plan(snakemake.input.plan)
    parts = list(snakemake.input.parts)
    records = shard_records(parts)
    identity = _one_model(records, parts)
    rows = gather_parts(plan, parts, snakemake.output.parquet)
    timer.stop()
    shards = [shard_summary(record) for record in records]
    work = total_work(records, plan)
    log.info("wrote %s: %d rows from %d shard(s) (%d rows encoded, %d reused) in %.1f s",
             snakemake.output.parquet, rows, len(shards), work["rows_encoded"], work["rows_reused"], timer.seconds)
    embedding = records[0]["embedding"]
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model, "selection": selection},
        # The parts' sha256 are in their own records (and in "shards"): not read again here.
        inputs=[snakemake.input.plan, *(provenance_path(path) for path in parts)],
        timing=timer.record(rows, unit="chunks"),
        device=torch_device_info(None),
        model=identity,
        extra={
            "corpus": {**plan.corpus, "embedded": rows},
            "embedding": {**embedding, "truncated_chunks": sum(r["embedding"]["truncated_chunks"] for r in records)},
            "shards": shards,
            "sharding": {"shards": len(shards), "shard_rows": plan.shard_rows, "window_rows": plan.window_rows},
            # as an embed job's record has it (the cache's prune keeps the identity that outputs name)
            "cache": work,
            "since_shard_plan": work_since(records, _made_at(snakemake.input.plan)),
            "plan": plan_beside_outcome(records, plan.corpus["sha256"]),
            **summed_http_usage(records),
        },
    )
    _note_stale_parts(Path(parts[0]).parent, parts)


def _made_at(plan_path) -> str:
    return json.loads(provenance_path(plan_path).read_text())["timing"]["finished"]


def _note_stale_parts(folder: Path, parts: list) -> None:
    """Parts of shards an earlier corpus had: kept (the same chunks may come back), but said."""
    current = {Path(path).name for path in parts}
    stale = [path for path in folder.glob("*.parquet") if path.name not in current]
    if stale:
        log.info("%d part(s) in %s belong to no shard of the current plan (an earlier corpus); "
                 "they can be deleted", len(stale), folder)


def run(snakemake) -> None:
    run_rule(snakemake, main)
