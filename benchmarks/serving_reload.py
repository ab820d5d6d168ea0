#!/usr/bin/env python3
"""Reload cost: a full load + index against a diff load + index after a 1 % edit.

    python benchmarks/serving_reload.py [--rows 100000] [--dim 384] [--edit 0.01]

On ``rows`` synthetic unit vectors (``_pg.synthetic``, the tests' corpus), with
the index stage's defaults (HNSW m 16, ef_construction 64, recall on 100
sampled rows):

* ``full``: ``load_table`` of a table that does not exist (COPY, key, HNSW
  built with the table, swap), then ``build_index`` (finds the index, keeps it,
  measures recall);
* ``diff``: the corpus with ``edit`` of its rows touched (half of them new
  texts and vectors, a quarter deleted, a quarter new chunks), ``plan_table``
  on it, ``load_table`` (a diff: hashes COPYed and joined, changed rows COPYed
  and applied), then ``build_index`` again (kept, measured again).

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


def edited_corpus(workdir: Path, chunks: Path, parquet: Path, share: float) -> tuple[Path, Path, dict]:
    """The corpus with ``share`` of its rows touched; (chunks, Parquet, what was touched)."""
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
        fresh = rng.normal(size=vectors.shape[1]).astype(np.float32)
        vectors[i] = fresh / np.linalg.norm(fresh)
    kept = [i for i in range(len(records)) if i not in deleted]
    added = touched - len(changed) - len(deleted)
    new = rng.normal(size=(added, vectors.shape[1])).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    records = [records[i] for i in kept] + [{"id": f"new{i}", "content": f"new chunk {i}", "summary": None}
                                            for i in range(added)]
    vectors = np.vstack([vectors[kept], new])
    folder = workdir / f"edited_{parquet.parent.name}_{share}"
    folder.mkdir(parents=True, exist_ok=True)
    edited_chunks = folder / "chunks.jsonl"
    edited_chunks.write_text("".join(json.dumps(r) + "\n" for r in records))
    edited_parquet = folder / "embeddings.parquet"
    with EmbeddingsWriter(edited_parquet, meta) as writer:
        for start in range(0, len(records), 4096):
            part = records[start:start + 4096]
            writer.write([r["id"] for r in part], vectors[start:start + 4096], [sha256_text(r["content"]) for r in part])
    return edited_chunks, edited_parquet, {"changed": len(changed), "deleted": len(deleted), "added": added}


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--edit", type=float, default=0.01)
    parser.add_argument("--workdir", default=_pg.DEFAULT_WORKDIR)
    args = parser.parse_args()

    from embedflow.database import connect
    from embedflow.index import IndexSettings, build_index
    from embedflow.load import load_table
    from embedflow.serving import ServingSettings
    from embedflow.table_plan import parquet_row_hashes, plan_table

    workdir = Path(args.workdir)
    chunks, parquet = _pg.synthetic(workdir, args.rows, args.dim)
    new_chunks, new_parquet, touched = edited_corpus(workdir, chunks, parquet, args.edit)
    build = {"maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": 0}
    serving = ServingSettings(index=IndexSettings(), build=build)
    table = "bench_reload"
    with _pg.server(workdir) as (settings, _), connect(settings) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.commit()
        _, full_load_s = timed(load_table, connection, table, parquet, chunks, serving=serving)
        _, full_index_s = timed(build_index, connection, table, IndexSettings(), build)
        plan, plan_s = timed(plan_table, parquet_row_hashes(new_chunks, new_parquet), connection, table)
        diff, diff_load_s = timed(load_table, connection, table, new_parquet, new_chunks, serving=serving)
        diff_index, diff_index_s = timed(build_index, connection, table, IndexSettings(), build)
    assert diff["strategy"] == "diff" and not diff_index["rebuilt"], (diff, diff_index["rebuilt"])
    counts = {name: diff[name] for name in ("inserted", "updated", "deleted", "unchanged")}
    print(f"{args.rows:,} x {args.dim} float32, edit {args.edit:.1%}: {touched}; load counted {counts}; "
          f"plan predicted {[plan[n] for n in ('insert', 'update', 'delete', 'keep')]} in {plan_s:.1f} s", file=sys.stderr)
    total_full, total_diff = full_load_s + full_index_s, diff_load_s + diff_index_s
    print("| run | load s | index s (kept, recall measured) | load + index s | share of full |")
    print("|---|---|---|---|---|")
    print(f"| full (first load, HNSW built with the table) | {full_load_s:.1f} | {full_index_s:.1f} | {total_full:.1f} | 100 % |")
    print(f"| diff after a {args.edit:.0%} edit | {diff_load_s:.1f} | {diff_index_s:.1f} | {total_diff:.1f} | "
          f"{total_diff / total_full:.1%} |")


if __name__ == "__main__":
    main()
