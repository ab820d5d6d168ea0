#!/usr/bin/env python3
"""Reload cost: a full load + index against a diff load + index after a 1 % edit.

    python benchmarks/serving_reload.py [--rows 100000] [--dim 384] [--edit 0.01] [--centres N]
                                        [--maintenance-work-mem 1GB] [--workers 0]

On ``rows`` synthetic unit vectors (``_pg.synthetic``: the tests' uniform corpus,
or with ``--centres`` one drawn around topics), with the index stage's defaults
(HNSW m 16, ef_construction 64, recall on 100 sampled rows):

* ``full``: ``load_table`` of a table that does not exist (COPY, key, HNSW
  built with the table, swap), then ``build_index`` (finds the index, keeps it,
  measures recall);
* ``diff``: the corpus with ``edit`` of its rows touched (half of them new
  texts and vectors, a quarter deleted, a quarter new chunks), ``plan_table``
  on it, ``load_table`` (a diff: hashes COPYed and joined, changed rows COPYed
  and applied; rule preflight's records index used, as in the workflow), then
  ``build_index`` again (kept; its recall carried, as the index job carries it
  while at most ``index.remeasure_recall_above`` of the rows changed).

In one process: a job's own start and bookkeeping (interpreter, imports,
provenance: 0.43 s for load and 0.33 s for index in the last ``edit_rerun.py``
run, docs/benchmarks.md) is not counted.
Prints one Markdown table; the figures in docs/benchmarks.md came from it.
Goal (issue 13): diff load + index ≤ 10 % of full load + index.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _pg
import numpy as np


def edited_corpus(workdir: Path, chunks: Path, parquet: Path, share: float, clustered: bool = False
                  ) -> tuple[Path, Path, dict]:
    """The corpus with ``share`` of its rows touched; (chunks, Parquet, what was touched).
    ``clustered``: an edited chunk's vector lands near its old one, a new chunk's near an
    existing chunk's (``_pg.near``), not anywhere on the sphere."""
    from embedflow.embeddings_file import EmbeddingsWriter, read_all, read_metadata
    from embedflow.hashing import sha256_text

    records = [json.loads(line) for line in chunks.read_text().splitlines()]
    meta, batch = read_metadata(parquet), read_all(parquet)[1]
    vectors = batch.vectors.copy()
    touched = max(4, int(len(records) * share))
    rng = np.random.default_rng(1)
    picked = rng.choice(len(records), size=touched * 3 // 4, replace=False)
    changed, deleted = set(picked[: touched // 2].tolist()), set(picked[touched // 2:].tolist())
    for i in changed:
        records[i]["content"] += " (edited)"
        if clustered:
            vectors[i] = _pg.near(rng, vectors[i:i + 1])[0]  # unit already
        else:
            fresh = rng.normal(size=vectors.shape[1]).astype(np.float32)
            vectors[i] = fresh / np.linalg.norm(fresh)
    kept = [i for i in range(len(records)) if i not in deleted]
    added = touched - len(changed) - len(deleted)
    if clustered:
        new = _pg.near(rng, vectors[rng.integers(len(vectors), size=added)])
    else:
        new = rng.normal(size=(added, vectors.shape[1])).astype(np.float32)
        new /= np.linalg.norm(new, axis=1, keepdims=True)
    records = [records[i] for i in kept] + [{"id": f"new{i}", "content": f"new chunk {i}", "summary": None}
                                            for i in range(added)]
    vectors = np.vstack([vectors[kept], new])
    folder = workdir / f"edited_{parquet.parent.name}_{share}"  # the corpus's folder names its vectors
    folder.mkdir(parents=True, exist_ok=True)
    edited_chunks = folder / "chunks.jsonl"
    edited_chunks.write_text("".join(json.dumps(r) + "\n" for r in records))
    edited_parquet = folder / "embeddings.parquet"
    with EmbeddingsWriter(edited_parquet, meta) as writer:
        for start in range(0, len(records), 4096):
            part = records[start:start + 4096]
            writer.write([r["id"] for r in part], vectors[start:start + 4096], [sha256_text(r["content"]) for r in part])
    return edited_chunks, edited_parquet, {"changed": len(changed), "deleted": len(deleted), "added": added}


def with_records_index(chunks: Path, parquet: Path) -> Path:
    """Rule preflight's records index of ``chunks`` (made once), and ``parquet`` naming the
    chunks file's sha256 as the embed stage's does (rewritten if not): then ``load_table``
    takes the workflow's path, reading 48 bytes a row of the index, not parsing each record."""
    import dataclasses
    import os

    from embedflow.chunks import validate_chunks
    from embedflow.embeddings_file import EmbeddingsWriter, iter_batches, read_metadata
    from embedflow.records_file import RecordsWriter, indexed_corpus

    records = chunks.with_name("records.parquet")
    if indexed_corpus(records) is None:
        with RecordsWriter(records) as writer:
            writer.corpus_sha256 = validate_chunks(chunks, "content", "fail", accepted=writer.add).sha256
    meta = read_metadata(parquet)
    if meta.corpus_sha256 != indexed_corpus(records):
        named = parquet.with_name("named-" + parquet.name)
        with EmbeddingsWriter(named, dataclasses.replace(meta, corpus_sha256=indexed_corpus(records))) as writer:
            for batch in iter_batches(parquet):
                writer.write(batch.ids, batch.vectors, batch.hashes)
        os.replace(named, parquet)
    return records


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--edit", type=float, default=0.01)
    parser.add_argument("--centres", type=int, default=0,
                        help="0: uniform random vectors (HNSW's worst case); N: vectors around N topics, "
                             "edits near the old vectors (about as fast to index as real embeddings)")
    parser.add_argument("--maintenance-work-mem", default="1GB", help="the index build's (index.maintenance_work_mem)")
    parser.add_argument("--workers", type=int, default=0, help="index.max_parallel_maintenance_workers")
    parser.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a server parameter set by ALTER SYSTEM first (e.g. shared_buffers=4GB)")
    parser.add_argument("--workdir", default=_pg.DEFAULT_WORKDIR)
    args = parser.parse_args()
    if any("=" not in item for item in args.server_setting):
        parser.error("--server-setting takes NAME=VALUE, e.g. shared_buffers=4GB")

    from embedflow.config_file import load_config
    from embedflow.database import connect
    from embedflow.index import IndexSettings, build_index
    from embedflow.load import load_table
    from embedflow.serving import ServingSettings
    from embedflow.table_plan import parquet_row_hashes, plan_table

    workdir = Path(args.workdir)
    chunks, parquet = _pg.synthetic(workdir, args.rows, args.dim, centres=args.centres)
    new_chunks, new_parquet, touched = edited_corpus(workdir, chunks, parquet, args.edit, clustered=args.centres > 0)
    records, new_records = with_records_index(chunks, parquet), with_records_index(new_chunks, new_parquet)
    build = {"maintenance_work_mem": args.maintenance_work_mem, "max_parallel_maintenance_workers": args.workers}
    serving = ServingSettings(index=IndexSettings(), build=build)
    # as the index job: a kept index's recall carried while few rows changed since it was measured
    remeasure_above = load_config(_pg.REPO / "config/config.yaml")["index"]["remeasure_recall_above"]
    table = "bench_reload"
    server_settings = dict(item.split("=", 1) for item in args.server_setting)
    with _pg.server(workdir, server_settings) as (settings, _), connect(settings) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.commit()
        full, full_load_s = timed(load_table, connection, table, parquet, chunks, serving=serving, records=records)
        _, full_index_s = timed(build_index, connection, table, IndexSettings(), build, remeasure_above, full["rows"])
        plan, plan_s = timed(plan_table, parquet_row_hashes(new_chunks, new_parquet), connection, table)
        diff, diff_load_s = timed(load_table, connection, table, new_parquet, new_chunks, serving=serving,
                                  records=new_records)
        diff_index, diff_index_s = timed(build_index, connection, table, IndexSettings(), build, remeasure_above,
                                         diff["rows"])
    assert diff["strategy"] == "diff" and diff["records_index_used"] and not diff_index["rebuilt"], diff
    counts = {name: diff[name] for name in ("inserted", "updated", "deleted", "unchanged")}
    vectors = f"around {args.centres} topics" if args.centres else "uniform"
    print(f"`python benchmarks/serving_reload.py --rows {args.rows} --dim {args.dim} --edit {args.edit} "
          f"--centres {args.centres} --maintenance-work-mem {args.maintenance_work_mem} --workers {args.workers}"
          + "".join(f" --server-setting {item}" for item in args.server_setting) + "`\n")
    print(f"{args.rows:,} x {args.dim} float32 ({vectors}), edit {args.edit:.1%}: {touched}; load counted {counts}; "
          f"plan predicted {[plan[n] for n in ('insert', 'update', 'delete', 'keep')]} in {plan_s:.1f} s; "
          f"diff index recall {'carried' if diff_index['recall_at_10'].get('carried') else 'measured'}",
          file=sys.stderr)
    total_full, total_diff = full_load_s + full_index_s, diff_load_s + diff_index_s
    print("| run | load s | index s (kept; recall measured, or carried) | load + index s | share of full |")
    print("|---|---|---|---|---|")
    print(f"| full (first load, HNSW built with the table) | {full_load_s:.1f} | {full_index_s:.1f} | {total_full:.1f} | 100 % |")
    print(f"| diff after a {args.edit:.0%} edit | {diff_load_s:.1f} | {diff_index_s:.1f} | {total_diff:.1f} | "
          f"{total_diff / total_full:.1%} |")


if __name__ == "__main__":
    main()
