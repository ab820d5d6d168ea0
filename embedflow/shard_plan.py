"""Checkpoint ``shard_plan``: which chunks each embed job encodes (``embedflow.shards``).

One plan per corpus, shared by every model: it validates the chunks file
(skipping what rule preflight rejected), applies test mode, and cuts the
selected chunks into windows and shards by content. It is a checkpoint
because the shards are known only once the corpus is read: rule gather asks
for one part per shard of the plan. The plan is rewritten whenever the
chunks change, but an embed job takes it as ``ancient()`` and is named by its
shard's content, so only the shards whose chunks changed are embedded again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedflow.atomic import write_json
from embedflow.chunks import iter_chunks, select_positions, validate_chunks
from embedflow.hashing import sha256_text
from embedflow.provenance import Timer, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.shards import ShardPlan, plan_shards, resolve_shard_rows
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)


def make_plan(chunks_path: str | Path, selection: dict, window_rows: int, shard_rows: int | str,
              skip: frozenset[int] = frozenset()) -> ShardPlan:
    """The plan of a chunks file, for a selection as ``config.selection_slice`` gives it."""
    text_field = selection["text_field"]
    corpus = validate_chunks(chunks_path, text_field, skip=skip)
    positions = select_positions(corpus.count, selection.get("max_chunks"), selection.get("sample", "head"),
                                 selection.get("seed", 0), skip)
    selected = corpus.count if positions is None else len(positions)
    effective = resolve_shard_rows(shard_rows, selected)
    pairs = ((chunk.id, sha256_text(chunk.text)) for chunk in iter_chunks(chunks_path, text_field, positions, skip))
    shards = plan_shards(pairs, window_rows, effective)
    corpus_facts = {"path": str(chunks_path), "sha256": corpus.sha256, "chunks": corpus.count,
                    "rejected": len(skip), "selected": selected}
    return ShardPlan(corpus_facts, text_field, window_rows, effective, shard_rows, positions, sorted(skip), shards)


def main(snakemake) -> None:
    timer = Timer()
    selection = params_json(snakemake, "selection")
    runtime = params_json(snakemake, "runtime")
    skip = rejected_positions(snakemake.input.rejected)
    plan = make_plan(snakemake.input.chunks, selection, runtime["window_rows"], runtime["shard_rows"], skip)
    write_json(snakemake.output.plan, plan.to_json())
    sizes = [shard.rows for shard in plan.shards]
    log.info("%s: %d chunks in %d shard(s) of %d to %d rows (shard_rows %s: %d), %d window(s)",
             snakemake.input.chunks, plan.corpus["selected"], len(sizes), min(sizes), max(sizes),
             plan.shard_rows_setting, plan.shard_rows, sum(len(shard.windows) for shard in plan.shards))
    write_provenance(
        snakemake.output.plan,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"selection": selection, "runtime (does not change the output)": runtime},
        inputs=list(snakemake.input),
        timing=timer.stop().record(plan.corpus["selected"], unit="chunks"),
        extra={"corpus": plan.corpus, "shards": len(plan.shards)},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
