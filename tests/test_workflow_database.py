"""The database stages through Snakemake: drift restored by the next run, no password anywhere."""

from __future__ import annotations

import json
import subprocess

from conftest import job_counts


def test_a_dropped_table_is_drift_and_the_next_run_restores_exactly_it(small_run):
    marker = json.loads(small_run.path("results/db/minilm_float32.loaded.json").read_text())
    assert marker["rows"] == 12 and marker["column_type"] == "vector(384)"
    # preflight's records index names the corpus gather's file was embedded from: a diff would use it
    assert marker["records_index"] == "results/records/chunks.parquet"
    untouched = small_run.path("results/db/minilm_binary.index.json").stat().st_mtime_ns
    dropped = small_run.embedflow("psql", "-c", "DROP TABLE minilm_float32")
    assert dropped.returncode == 0, dropped.stderr
    report = small_run.embedflow("check")
    assert report.returncode == 1
    assert "DRIFT  results/db/minilm_float32.loaded.json" in report.stdout
    assert "ok     results/db/minilm_binary.loaded.json" in report.stdout
    assert small_run.embedflow("check", "--invalidate").returncode == 0
    plan = small_run.snakemake("--dry-run").stdout
    assert "rule load:" in plan and plan.count("rule load:") == 1 and "precision=float32" in plan
    small_run.snakemake()
    assert small_run.embedflow("check").returncode == 0
    restored = json.loads(small_run.path("results/db/minilm_float32.loaded.json").read_text())
    assert restored["rows"] == 12 and restored["oid"] != marker["oid"]
    assert small_run.path("results/db/minilm_binary.index.json").stat().st_mtime_ns == untouched
    search = small_run.embedflow("search", "sort a list", "--model", "minilm", "-k", "3",
                                       env={"HF_HUB_OFFLINE": "1"})
    assert search.returncode == 0, search.stderr
    assert len([line for line in search.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3


def test_no_server_is_left_running(small_run):
    pgdata = str(small_run.path("results/pgdata"))
    running = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert pgdata not in running


def test_asking_for_an_int8_table_fails_before_any_job_runs(small_run):
    """README: pgvector has no int8 type; asking for an int8 table fails with a message naming
    halfvec and binary (here while Snakemake plans, so nothing is converted or verified first)."""
    before = {path: path.stat().st_mtime_ns for path in small_run.path("results").rglob("*int8*")}
    done = small_run.snakemake("--", "results/db/minilm_int8.loaded.json", check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "pgvector has no int8 vector type" in output and "halfvec" in output and "binary (bit" in output
    assert job_counts(output) == {} and "Select jobs to execute" not in output
    # the run's int8 file and reports (int8 stays in Parquet) as they were, and no int8 table
    assert {path: path.stat().st_mtime_ns for path in small_run.path("results").rglob("*int8*")} == before
    assert not list(small_run.path("results/db").glob("*int8*"))


def test_a_password_given_by_dsn_reaches_no_file(workflow, password_server):
    dsn, password = password_server
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN"})
    workflow.snakemake(env={"EMBEDFLOW_DSN": dsn})
    assert json.loads(workflow.path("results/db/minilm_float32.index.json").read_text())["database"]["kind"] == "dsn"
    leaks = [
        path for folder in ("results", ".snakemake") for path in workflow.path(folder).rglob("*")
        if path.is_file() and password.encode() in path.read_bytes()
    ]
    assert leaks == []


# An unset DSN variable and an unreachable server stop the run before any job:
# robustness/test_preflight.py.
