"""The database stages through Snakemake: drift restored by the next run, no password anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def cli(workflow, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "embedflow.cli", *args], cwd=workflow.root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(workflow.root), **(env or {})},
    )


@pytest.fixture
def loaded(workflow):
    workflow.update_config(precisions=["float32", "binary"])
    workflow.snakemake("--cores", "2")
    return workflow


def test_a_dropped_table_is_drift_and_the_next_run_restores_exactly_it(loaded):
    marker = json.loads(loaded.path("results/db/minilm_float32.loaded.json").read_text())
    assert marker["rows"] == 12 and marker["column_type"] == "vector(384)"
    untouched = loaded.path("results/db/minilm_binary.index.json").stat().st_mtime_ns
    dropped = cli(loaded, "psql", "-c", "DROP TABLE minilm_float32")
    assert dropped.returncode == 0, dropped.stderr
    report = cli(loaded, "check")
    assert report.returncode == 1
    assert "DRIFT  results/db/minilm_float32.loaded.json" in report.stdout
    assert "ok     results/db/minilm_binary.loaded.json" in report.stdout
    assert cli(loaded, "check", "--invalidate").returncode == 0
    plan = loaded.snakemake("--dry-run").stdout
    assert "rule load:" in plan and plan.count("rule load:") == 1 and "precision=float32" in plan
    loaded.snakemake()
    assert cli(loaded, "check").returncode == 0
    restored = json.loads(loaded.path("results/db/minilm_float32.loaded.json").read_text())
    assert restored["rows"] == 12 and restored["oid"] != marker["oid"]
    assert loaded.path("results/db/minilm_binary.index.json").stat().st_mtime_ns == untouched
    search = cli(loaded, "search", "sort a list", "--model", "minilm", "-k", "3", env={"HF_HUB_OFFLINE": "1"})
    assert search.returncode == 0, search.stderr
    assert len([line for line in search.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3


def test_no_server_is_left_running(loaded):
    pgdata = str(loaded.path("results/pgdata"))
    running = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert pgdata not in running


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


def test_unset_dsn_variable_fails_the_load_with_its_name(workflow):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN_MISSING"})
    env = {key: value for key, value in os.environ.items() if key != "EMBEDFLOW_DSN_MISSING"}
    done = workflow.snakemake(check=False, env=env)
    assert done.returncode != 0
    log = workflow.path("results/logs/load/minilm_float32.log").read_text()
    assert "EMBEDFLOW_DSN_MISSING, which is not set" in log
    assert not workflow.path("results/db").exists() or not list(workflow.path("results/db").glob("*.json"))


def test_an_unreachable_database_is_a_clear_error(workflow):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN"})
    done = workflow.snakemake(check=False, env={"EMBEDFLOW_DSN": "postgresql://rag:hunter2@127.0.0.1:9/rag"})
    assert done.returncode != 0
    log = workflow.path("results/logs/load/minilm_float32.log").read_text()
    assert "cannot connect to the database" in log and "127.0.0.1" in log and "hunter2" not in log
    assert not list(workflow.path("results/db").glob("*.json")) if workflow.path("results/db").exists() else True
