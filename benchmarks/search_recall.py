#!/usr/bin/env python3
"""Search quality and speed of the index stage on real embeddings: recall@10 and p50/p95 latency.

Target (project issue, "pgvector stages"): recall@10 and p50/p95 query
latency at two or three ef_search settings on real embeddings.

The corpus: every chunk of ``data/example/build_corpus.py --all`` (~3,800
CPython docstrings), embedded with the bundled all-MiniLM-L6-v2 by
``embedflow.embed.embed_corpus`` (float32, normalized; the Parquet is kept in
the workdir and reused), loaded by ``load_table``, indexed by ``build_index``
(HNSW m 16, ef_construction 64, vector_ip_ops; then IVFFlat with embedflow's
automatic lists).

Two query sets:

* ``table``: 200 of the table's own vectors, drawn by
  ``embedflow.index.sample_vectors`` (what ``measure_recall`` uses; each query
  finds itself);
* ``texts``: the 40 queries of ``data/example/queries.jsonl`` and the 98 of
  ``pairs.jsonl``, embedded with the same model (real questions, not in the table).

Ground truth is exact search (``search(..., exact=True)``, index scans off).
Recall@10 counts an ANN hit when its exact distance is within the 10th exact
distance (ties are not held against the index), as ``measure_recall`` does.
Latency is the client-side wall time of one ``embedflow.search.search`` call
(its own transaction, ``set_config`` of the setting and ``enable_seqscan = off``,
the query, commit), after 20 warm-up queries; "SQL only" is the same query as a
prepared statement in one autocommit session with the settings SET once.
Settings alternate in order between rounds; figures are medians over rounds.

Usage (from the repository root, venv active)::

    python benchmarks/search_recall.py                          # ef_search 20,40,100; probes 1,2; 2 rounds
    python benchmarks/search_recall.py --max-seq-length 128     # embed twice as fast (shorter texts)
    python benchmarks/search_recall.py --chunks 500 --repeats 1 # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pg  # noqa: E402
from _pg import common  # noqa: E402

TABLE = "bench_real"
QUERY_FILES = (common.REPO / "data/example/queries.jsonl", common.REPO / "data/example/pairs.jsonl")


def embed_real(workdir: Path, chunks_count: int | None, max_seq_length: int | None, threads: int) -> dict:
    """The real corpus embedded by embed_corpus (cached), and the query texts embedded by the same model."""
    import numpy as np

    from embedflow.embed import EmbedSettings, embed_corpus

    chunks = common.real_corpus(workdir)
    if chunks_count:
        chunks = common.head_corpus(workdir, chunks_count)
    tag = f"{chunks.stem}_seq{max_seq_length or 'model'}"
    parquet = workdir / f"embeddings_{tag}.parquet"
    queries_npy = workdir / f"queries_{tag}.npy"
    facts_json = workdir / f"embed_{tag}.json"
    spec = common.model_spec(max_seq_length=max_seq_length)
    texts = [json.loads(line)["query"] for path in QUERY_FILES for line in path.read_text().splitlines() if line.strip()]
    if not (parquet.exists() and queries_npy.exists() and facts_json.exists()):
        settings = EmbedSettings(model_key="minilm", model=spec, device="cpu", threads=threads)
        started = time.perf_counter()
        result = embed_corpus(chunks, parquet, settings)
        seconds = time.perf_counter() - started
        vectors = result.encoder.encode(texts, spec.get("query_prompt"), 32)
        np.save(queries_npy, vectors.astype(np.float32))
        facts_json.write_text(json.dumps({
            "embedded_chunks": result.rows, "seconds": seconds, "loop_seconds": result.timer.seconds,
            "chunks_per_second": result.rows / result.timer.seconds, "max_seq_length": result.encoder.max_seq_length,
            "truncated": result.encoder.truncated_texts, "threads": threads,
        }))
    facts = json.loads(facts_json.read_text())
    return {"chunks": chunks, "parquet": parquet, "queries": list(np.load(queries_npy)), "texts": texts, **facts}


def measure_setting(connection, dsn, plan, queries: dict, truth: dict, setting: dict) -> dict:
    results = {}
    for name, vectors in queries.items():
        result = _pg.recall_and_latency(connection, plan, TABLE, vectors, truth[name], setting)
        result.update(_pg.sql_latency(dsn, plan, TABLE, vectors, setting))
        results[name] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=None, help="first N real chunks (default: all, ~3,800)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="embedding tokens (default: the model's 256)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for embedding")
    parser.add_argument("--ef-search", default="20,40,100")
    parser.add_argument("--ivfflat-probes", default="1,2", help="'' to skip IVFFlat")
    parser.add_argument("--ivfflat-lists", default="auto")
    parser.add_argument("--table-queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="max_parallel_maintenance_workers for the builds")
    parser.add_argument("--wait-idle", type=float, default=60.0)
    parser.add_argument("--workdir", default=_pg.DEFAULT_WORKDIR)
    parser.add_argument("--keep-pgdata", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from embedflow.database import connect
    from embedflow.index import IndexSettings, build_index, column_of, measure_recall, plan_for, sample_vectors
    from embedflow.load import load_table

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    real = embed_real(workdir, args.chunks, args.max_seq_length, args.threads)
    print(f"embedded {real['embedded_chunks']} ({real['chunks_per_second']:.1f} chunks/s); {len(real['texts'])} query texts",
          file=sys.stderr)
    pgdata = workdir / "pgdata"
    if pgdata.exists() and not args.keep_pgdata:
        shutil.rmtree(pgdata)
    build = {"maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": args.workers}
    indexes = [("hnsw", "hnsw.ef_search", [int(v) for v in args.ef_search.split(",") if v.strip()])]
    if args.ivfflat_probes.strip():
        indexes.append(("ivfflat", "ivfflat.probes", [int(v) for v in args.ivfflat_probes.split(",") if v.strip()]))
    measured: dict[tuple, list[dict]] = {}
    built, planner, cross_check, exact_latency = {}, {}, {}, {}
    with _pg.server(workdir) as (db_settings, dsn), connect(db_settings) as connection:
        server = _pg.server_facts(connection)
        loaded = load_table(connection, TABLE, real["parquet"], real["chunks"])
        rows = loaded["rows"]
        for method, knob, values in indexes:
            settings = IndexSettings(method=method, metric="ip", m=16, ef_construction=64, ef_search=40,
                                     lists=args.ivfflat_lists if args.ivfflat_lists == "auto" else int(args.ivfflat_lists),
                                     probes="auto", recall_sample=args.table_queries)
            facts = build_index(connection, TABLE, settings, build)
            built[method] = facts
            with connection.cursor() as cursor:
                plan = plan_for(column_of(cursor, TABLE), settings)
            connection.commit()
            queries = {"table": sample_vectors(connection, TABLE, plan.column, args.table_queries, settings.seed),
                       "texts": real["queries"]}
            truth = {name: _pg.exact_neighbours(connection, plan, TABLE, vectors) for name, vectors in queries.items()}
            for name, entries in truth.items():
                latencies = [entry[2] for entry in entries]
                exact_latency[name] = (1000 * _pg.percentile(latencies, 50), 1000 * _pg.percentile(latencies, 95))
            for round_ in range(args.repeats):
                order = values if round_ % 2 == 0 else list(reversed(values))
                for value in order:
                    setting = {knob: value}
                    _pg.settle(connection, args.wait_idle)
                    results = measure_setting(connection, dsn, plan, queries, truth, setting)
                    for name, result in results.items():
                        measured.setdefault((method, value, name), []).append(result)
                    print(f"round {round_ + 1} {knob}={value}: " + ", ".join(
                        f"{name} recall {r['recall']:.3f} p50 {r['p50_ms']:.2f} ms" for name, r in results.items()),
                        file=sys.stderr)
            for value in values:
                setting = {knob: value}
                planner[(method, value)] = _pg.uses_index(connection, plan, TABLE, real["queries"][0], setting)
                cross_check[(method, value)] = measure_recall(connection, TABLE, plan, setting, settings)["recall"]
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.execute("DELETE FROM embedflow_tables WHERE table_name = %s", (TABLE,))
        connection.commit()
    left = _pg.postgres_running(pgdata)
    if left:
        print(f"WARNING: server still running: {left}", file=sys.stderr)
    if not args.keep_pgdata:
        shutil.rmtree(pgdata, ignore_errors=True)

    print(f"### Search: recall@10 and latency on real embeddings ({rows:,} chunks x 384, all-MiniLM-L6-v2)\n")
    print(_pg.header(server))
    print(f"- corpus: `build_corpus.py --all` ({rows:,} chunks), embedded by embed_corpus at "
          f"{real['chunks_per_second']:.1f} chunks/s (max_seq_length {real['max_seq_length']}, "
          f"{real['truncated']} chunks truncated, {real['threads']} threads), load {loaded['seconds']:.2f} s")
    for method, facts in built.items():
        print(f"- {method}: `{facts['definition']}`, built in {facts['build_seconds']} s "
              f"(maintenance_work_mem 1GB, {args.workers} workers), {facts['index_bytes'] / 2**20:.1f} MiB; "
              f"build_index's own recall@10 {facts['recall_at_10']['recall']} at {facts['search_settings']}")
    print(f"- queries: `table` = {args.table_queries} of the table's own vectors (sample_vectors, seed 0); "
          f"`texts` = {len(real['texts'])} real query texts (queries.jsonl + pairs.jsonl) embedded by the same model")
    print("- exact search (seq scan) latency, p50 / p95 ms: " + "; ".join(
        f"{name} {p50:.2f} / {p95:.2f}" for name, (p50, p95) in exact_latency.items()))
    print(f"- {args.repeats} rounds, settings alternating; medians over rounds; latency is one "
          "`embedflow.search.search` call, client side\n")
    table_rows = []
    for method, knob, values in indexes:
        for value in values:
            for name in ("table", "texts"):
                results = measured[(method, value, name)]
                table_rows.append([
                    method, f"{knob.split('.')[1]} {value}", name, results[0]["queries"],
                    f"{_pg.median([r['recall'] for r in results]):.3f}",
                    f"{_pg.median([r['p50_ms'] for r in results]):.2f}",
                    f"{_pg.median([r['p95_ms'] for r in results]):.2f}",
                    " / ".join(f"{r['p50_ms']:.2f}" for r in results),
                    f"{_pg.median([r['sql_p50_ms'] for r in results]):.2f}",
                    f"{_pg.median([r['sql_p95_ms'] for r in results]):.2f}",
                    f"{cross_check[(method, value)]:.3f}" if name == "table" else "",
                    planner[(method, value)] if name == "texts" else "",
                ])
    print(common.table(["index", "setting", "queries", "n", "recall@10", "p50 ms", "p95 ms", "p50 per round",
                        "SQL only p50 ms", "SQL only p95 ms", "measure_recall", "planner's own choice"], table_rows))
    print()
    if args.json:
        Path(args.json).write_text(json.dumps({
            "server": server, "built": built, "planner": {f"{k[0]}-{k[1]}": v for k, v in planner.items()},
            "measured": {f"{k[0]}-{k[1]}-{k[2]}": v for k, v in measured.items()},
            "exact_latency_ms": exact_latency, "args": vars(args),
            "embed": {k: v for k, v in real.items() if k not in ("queries", "texts")},
        }, indent=1, default=str))


if __name__ == "__main__":
    main()
