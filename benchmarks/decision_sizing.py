#!/usr/bin/env python3
"""Bytes per row of the servable configurations of a large model, extrapolated to the target rows.

The decision report (``embedflow.decision``) extrapolates storage, HNSW /
IVFFlat build memory and resident RAM from bytes per row measured on the
loaded table. For a model the example does not run (Qwen3-Embedding-4B: 2,560
dims), this script measures the same bytes on a synthetic table of that
width: the example's chunk texts and metadata, cycled to ``--rows`` rows,
with random unit vectors (so quality figures are meaningless here; sizes are
not: they depend on the width, not on the values). It loads float32
(``vector(2560)``, indexed as ``(embedding::halfvec(2560))``), float16
(``halfvec``) and binary (``bit``) tables with the load stage, runs the
sweep stage's own code on them (``sweep_table``: every candidate index built
on a copy, then measured), and prints the extrapolations of
``embedflow.decision.sizing`` as a Markdown table.

With ``--decision results/eval/decision.json`` it prints the same table for the
candidates of a decision report instead (the example's models).

Usage (from the repository root, venv active)::

    python benchmarks/decision_sizing.py                       # 2,000 rows x 2,560 dims, 10 M rows target
    python benchmarks/decision_sizing.py --rows 500 --dim 384  # smoke test
    python benchmarks/decision_sizing.py --decision results/eval/decision.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pg  # noqa: E402

REPO = _pg.REPO


def corpus(folder: Path, rows: int, dim: int, seed: int = 0) -> Path:
    """A chunks file of the example's texts cycled to ``rows`` and embeddings files of random unit vectors."""
    import numpy as np

    from conftest import write_chunks
    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_text
    from embedflow.precision import convert

    example = json.loads((REPO / "data/example/chunks.json").read_text())
    chunks = [{**example[i % len(example)], "id": f"{example[i % len(example)]['id']}#{i // len(example)}"}
              for i in range(rows)]
    chunks_path = write_chunks(folder / "chunks.jsonl", chunks)
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for precision in ("float32", "float16", "binary"):
        meta = EmbeddingsMetadata("wide", "none", dim, precision, True, "float32", "content", "0" * 64)
        with EmbeddingsWriter(folder / f"embeddings_wide_{precision}.parquet", meta) as writer:
            writer.write([c["id"] for c in chunks], convert(vectors, precision),
                         [sha256_text(c["content"]) for c in chunks])
    return chunks_path


def measure(workdir: Path, rows: int, dim: int) -> list[dict]:
    """Sweep reports of the three tables (sizes; one search setting each, a few random queries)."""
    import numpy as np

    from embedflow.database import connect
    from embedflow.decision.sweep import Queries, sweep_table
    from embedflow.load import load_table
    from embedflow.schema import defaults

    folder = workdir / f"wide_{rows}x{dim}"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = corpus(folder, rows, dim)
    queries = np.random.default_rng(1).normal(size=(5, dim)).astype(np.float32)
    sweep = {"index": defaults("index"), "methods": ["hnsw", "ivfflat"], "binary_quantize": True,
             "ef_search": [40], "probes": [1]}
    build = {"maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": 0}
    reports = []
    with _pg.server(workdir) as (settings, _), connect(settings) as connection:
        for precision in ("float32", "float16", "binary"):
            table = f"wide{dim}_{precision}"
            load_table(connection, table, folder / f"embeddings_wide_{precision}.parquet", chunks)
            ids = [row[0] for row in connection.execute(f"SELECT id FROM {table} ORDER BY id LIMIT 5").fetchall()]
            connection.commit()
            started = time.perf_counter()
            report = sweep_table(connection, table, sweep, build, Queries(ids, queries, {i: {i} for i in ids}))
            print(f"swept {table} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            reports.append({"model": f"wide{dim}", "precision": precision, **report})
            connection.execute(f"DROP TABLE {table}")
            connection.commit()
    return reports


def rows_of_sweeps(reports: list[dict], target_rows: int) -> list[dict]:
    from embedflow.decision.sizing import extrapolate

    return [{"table": report["table"], "index": index["label"], "value_bytes": index["indexed_value_bytes"],
             "extrapolation": extrapolate(report, index, target_rows)}
            for report in reports for index in report["indexes"]]


def rows_of_decision(path: Path) -> list[dict]:
    seen, rows = set(), []
    for candidate in json.loads(path.read_text())["candidates"]:
        if (candidate["table"], candidate["index"]) not in seen:
            seen.add((candidate["table"], candidate["index"]))
            rows.append({"table": candidate["table"], "index": candidate["index"], "value_bytes": None,
                         "extrapolation": candidate["extrapolation"]})
    return rows


def table(rows: list[dict]) -> str:
    from embedflow.decision.sizing import gib

    target = rows[0]["extrapolation"]["target_rows"]
    lines = [f"| table | index | table + pk B/row | index B/row | storage at {target:,} | build memory | "
             "maintenance_work_mem | resident RAM |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        sizes = row["extrapolation"]
        per_row = sizes["bytes_per_row"]
        lines.append(f"| {row['table']} | {row['index']} | {per_row['table_bytes'] + per_row['primary_key_bytes']:,.0f} | "
                     f"{per_row['index_bytes']:,.0f} | {gib(sizes['storage']['bytes'])} | "
                     f"{gib(sizes['build_memory']['bytes'])} | {sizes['build_memory']['setting']} | "
                     f"{gib(sizes['resident_ram']['bytes'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--target-rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path(_pg.DEFAULT_WORKDIR))
    parser.add_argument("--decision", type=Path, help="print the table of a decision report's candidates instead")
    args = parser.parse_args()
    if args.decision:
        print(table(rows_of_decision(args.decision)))
        return
    reports = measure(args.workdir, args.rows, args.dim)
    rows = rows_of_sweeps(reports, args.target_rows)
    print(table(rows))
    print()
    for row in rows:
        sizes = row["extrapolation"]
        print(f"- {row['table']} {row['index']}: {sizes['storage']['formula']}; {sizes['build_memory']['formula']}; "
              f"{sizes['resident_ram']['formula']}")


if __name__ == "__main__":
    main()
