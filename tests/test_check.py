"""embedflow.check: markers against the live database, and the repair by --invalidate + rerun.

The drift tests damage one table of a workflow run to the end (``small_run``,
tables minilm_float32, _float16, _bfloat16 and _binary) the way a person at psql might, and each
leaves it whole again: the next Snakemake run is the repair under test.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from conftest import INDEX_BUILD, SMALL_RUN_PRECISIONS, job_counts
from embedflow.atomic import write_json
from embedflow.check import check_all, invalidate
from embedflow.database import DatabaseSettings, connect, describe_target
from embedflow.index import IndexSettings, build_index
from embedflow.load import load_table

TABLE = "minilm_float32"  # the default database.table template, {model}_{precision}
INDEX = f"{TABLE}_embedding_idx"


def test_check_reports_drift_of_tables_and_indexes(db, embedded_db, db_corpus, tmp_path):
    folder, chunks, _ = db_corpus
    target = describe_target(embedded_db)
    markers = tmp_path / "db"
    for name in ("t_drift_a", "t_drift_b"):
        write_json(markers / f"{name}.loaded.json",
                   {**load_table(db, name, folder / "embeddings_synthetic_float32.parquet", chunks), "database": target})
        write_json(markers / f"{name}.index.json",
                   {**build_index(db, name, IndexSettings(recall_sample=5), INDEX_BUILD), "database": target})
    write_json(markers / "other.loaded.json", {"table": "elsewhere", "database": {"kind": "dsn"}})
    checked, drift = check_all(db, markers, target)
    assert len(checked) == 4 and drift == []

    db.execute("DROP TABLE t_drift_a")
    db.execute("DROP INDEX t_drift_b_embedding_idx")
    db.commit()
    checked, drift = check_all(db, markers, target)
    problems = {(item.marker.name, item.problem) for item in drift}
    assert ("t_drift_a.loaded.json", "the table is missing") in problems
    assert ("t_drift_a.index.json", "the index t_drift_a_embedding_idx is missing") in problems
    assert ("t_drift_b.index.json", "the index t_drift_b_embedding_idx is missing") in problems
    assert not any(name == "t_drift_b.loaded.json" for name, _ in problems)
    for path in {item.marker for item in drift}:
        invalidate(path)
    assert sorted(p.name for p in markers.iterdir()) == ["other.loaded.json", "t_drift_b.loaded.json"]


# --- each kind of drift, made behind the workflow's back --------------------------------


def replace_the_table(connection, index_marker):
    """A new table under the old name, with the same rows, column and index definition."""
    connection.execute(f"CREATE TABLE {TABLE}_copy (LIKE {TABLE} INCLUDING ALL EXCLUDING INDEXES)")
    connection.execute(f"INSERT INTO {TABLE}_copy SELECT * FROM {TABLE}")
    connection.execute(f"DROP TABLE {TABLE}")
    connection.execute(f"ALTER TABLE {TABLE}_copy RENAME TO {TABLE}")
    connection.execute(index_marker["definition"])


def change_the_column_type(connection, index_marker):
    # No rewrite, and the index keeps its definition: only the column's type differs.
    connection.execute(f"ALTER TABLE {TABLE} ALTER COLUMN embedding TYPE vector")


def delete_a_row(connection, index_marker):
    connection.execute(f"DELETE FROM {TABLE} WHERE id = (SELECT min(id) FROM {TABLE})")


def change_the_registry(connection, index_marker):
    connection.execute("UPDATE embedflow_tables SET parquet_sha256 = repeat('0', 64) WHERE table_name = %s", (TABLE,))


def change_the_index(connection, index_marker):
    connection.execute(f"DROP INDEX {INDEX}")
    connection.execute(f"CREATE INDEX {INDEX} ON {TABLE} USING hnsw (embedding vector_ip_ops) WITH (m = 8)")


def invalidate_the_index(connection, index_marker):
    # What a failed CREATE INDEX CONCURRENTLY leaves behind (we are the superuser).
    connection.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (INDEX,))


# kind: (damage, the marker that tells, the problem `embedflow check` prints, the repair's jobs)
DRIFTS = {
    "replaced table": (replace_the_table, "loaded",
                       r"the table was replaced outside the workflow \(oid \d+, marker \d+\)", {"load": 1, "index": 1}),
    "column type": (change_the_column_type, "loaded",
                    re.escape("embedding is vector, marker says vector(384)"), {"load": 1, "index": 1}),
    "row count": (delete_a_row, "loaded", re.escape("11 rows, marker says 12"), {"load": 1, "index": 1}),
    "registry": (change_the_registry, "loaded",
                 re.escape("the registry does not record the Parquet the marker names"), {"load": 1, "index": 1}),
    "index definition": (change_the_index, "index", re.escape(
        f"the index is now: CREATE INDEX {INDEX} ON public.{TABLE} USING hnsw (embedding vector_ip_ops) WITH (m='8')"
    ), {"index": 1}),
    "invalid index": (invalidate_the_index, "index", re.escape("the index is invalid (a failed build?)"), {"index": 1}),
}


def mtimes(folder):
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def read_report(stdout: str) -> tuple[dict, list, list]:
    """`embedflow check --invalidate` output: {marker: ok|DRIFT}, the problems, the markers removed."""
    statuses = {name: status for status, name in re.findall(r"^(DRIFT|ok)\s+results/db/(\S+)$", stdout, re.M)}
    problems = [line.strip() for line in stdout.splitlines() if line.startswith("       ")]
    removed = re.search(r"^removed (.+): the next", stdout, re.M)
    return statuses, problems, removed.group(1).split(", ") if removed else []


@pytest.mark.parametrize("kind", DRIFTS)
def test_each_kind_of_drift_is_reported_and_the_rerun_repairs_exactly_it(small_run, kind):
    damage, marker_kind, problem, repair_jobs = DRIFTS[kind]
    workflow = small_run
    folder = workflow.path("results/db")
    configured = workflow.config["database"]
    target = describe_target(DatabaseSettings(pgdata=configured["pgdata"]))  # as the markers record it
    # rewritten by the repair: the drifted marker, and after a reload the index marker too
    rewritten = {f"{TABLE}.{name}.json{suffix}"
                 for name in {marker_kind, "index"} for suffix in ("", ".provenance.json")}
    with connect(DatabaseSettings(pgdata=str(workflow.path(configured["pgdata"]))), autocommit=True) as connection:
        assert check_all(connection, folder, target)[1] == [], "the workflow's database had drifted before"
        damage(connection, json.loads((folder / f"{TABLE}.index.json").read_text()))
        before = mtimes(folder)

        report = workflow.embedflow("check", "--invalidate")
        assert report.returncode == 0, report.stderr
        statuses, problems, removed = read_report(report.stdout)
        tables = [f"minilm_{precision}" for precision in SMALL_RUN_PRECISIONS if precision != "int8"]
        markers = [f"{table}.{name}.json" for table in tables for name in ("loaded", "index")]
        drifted = f"{TABLE}.{marker_kind}.json"
        assert statuses == {name: "DRIFT" if name == drifted else "ok" for name in markers}, report.stdout
        assert len(problems) == 1 and re.fullmatch(f"{TABLE}: {problem}", problems[0]), report.stdout
        assert removed == sorted(f"results/db/{TABLE}.{name}.json" for name in {marker_kind, "index"})
        assert not any(workflow.path(path).exists() for path in removed)

        rerun = workflow.snakemake()
        assert job_counts(rerun.stdout + rerun.stderr) == Counter(repair_jobs)
        after = mtimes(folder)
        assert set(after) == set(before)  # every marker is back ...
        assert {name for name in before if before[name] != after[name]} == rewritten  # ... and only these are new
        assert check_all(connection, folder, target)[1] == []
