"""Markers against the live database: does each table and index still match what was built?

The database is state Snakemake cannot see. The load and index rules write
markers of what they built; ``embedflow check`` compares every marker with
the database (table present and the same one, row count, column type, the
Parquet sha256 in the registry, the index definition). With ``--invalidate``
it removes the markers that no longer tell the truth, and the next
``snakemake`` run redoes exactly those jobs: a missing output is rebuilt.
A table's index marker goes with its load marker: a full reload replaces the
table and so its index, and Snakemake, asked for the index marker, would
not rerun the load for a missing load marker alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedflow.database import table_state
from embedflow.paths import INDEX_SUFFIX, LOADED_SUFFIX
from embedflow.provenance import provenance_path
from embedflow.tables import REGISTRY_TABLE


@dataclass(frozen=True)
class Drift:
    marker: Path
    table: str
    problem: str


def check_loaded(cursor, marker_path: Path, marker: dict) -> list[Drift]:
    from psycopg import sql

    table = marker["table"]
    live = table_state(cursor, table)
    if live is None:
        return [Drift(marker_path, table, "the table is missing")]
    problems = []
    if live["oid"] != marker["oid"]:
        problems.append(f"the table was replaced outside the workflow (oid {live['oid']}, marker {marker['oid']})")
    if live["column_type"] != marker["column_type"]:
        problems.append(f"embedding is {live['column_type']}, marker says {marker['column_type']}")
    rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    if rows != marker["rows"]:
        problems.append(f"{rows} rows, marker says {marker['rows']}")
    registry = cursor.execute(
        sql.SQL("SELECT parquet_sha256 FROM {} WHERE table_name = %s").format(sql.Identifier(REGISTRY_TABLE)),
        (table,),
    ).fetchone() if _table_exists(cursor, REGISTRY_TABLE) else None
    if registry is None or registry[0] != marker["parquet_sha256"]:
        problems.append("the registry does not record the Parquet the marker names")
    return [Drift(marker_path, table, problem) for problem in problems]


def _table_exists(cursor, name: str) -> bool:
    return cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def check_index(cursor, marker_path: Path, marker: dict) -> list[Drift]:
    table = marker["table"]
    if marker.get("index") is None:
        return []
    row = cursor.execute(
        """SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i
           WHERE i.indexrelid = to_regclass(%s)""",
        (marker["index"],),
    ).fetchone()
    if row is None:
        return [Drift(marker_path, table, f"the index {marker['index']} is missing")]
    problems = []
    if row[0] != marker["definition"]:
        problems.append(f"the index is now: {row[0]}")
    if not row[1]:
        problems.append("the index is invalid (a failed build?)")
    return [Drift(marker_path, table, problem) for problem in problems]


def markers(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{LOADED_SUFFIX}")) + sorted(folder.glob(f"*{INDEX_SUFFIX}"))


def check_all(connection, folder: Path, target: dict) -> tuple[list[Path], list[Drift]]:
    """Every marker in ``folder`` that belongs to ``target`` (the database in use)."""
    checked, drift = [], []
    for path in markers(folder):
        marker = json.loads(path.read_text())
        if marker.get("database") != target:
            continue  # built on another database
        with connection.cursor() as cursor:
            if path.name.endswith(LOADED_SUFFIX):
                drift += check_loaded(cursor, path, marker)
            else:
                drift += check_index(cursor, path, marker)
        connection.commit()
        checked.append(path)
    return checked, drift


def invalidate(marker_path: Path) -> list[Path]:
    """Remove a marker and its provenance (a load marker: its table's index marker too);
    returns the markers removed. Snakemake rebuilds a missing output."""
    paths = [marker_path]
    if marker_path.name.endswith(LOADED_SUFFIX):
        paths.append(marker_path.with_name(marker_path.name[: -len(LOADED_SUFFIX)] + INDEX_SUFFIX))
    removed = [path for path in paths if path.exists()]
    for path in paths:
        path.unlink(missing_ok=True)
        provenance_path(path).unlink(missing_ok=True)
    return removed
