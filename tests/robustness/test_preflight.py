"""Fail fast: what can be checked before the first model job is, and stops the run there.

When the run starts, for the jobs it will run (embedflow.onstart): the DSN
variable, the server and its pgvector (database jobs), the query set, the
pairs files and the adapters; nothing has run then, not even preflight. Rule
preflight, which every model job waits for, checks the corpus and the disk
(embedflow.preflight). Each case: a non-zero exit, one clear line on the
console, no traceback, and no model job started (no embeddings file, no embed
log). Table names are checked while planning
(robustness/test_bad_input.py::test_hostile_config_fails_at_planning), bad
chunks in robustness/test_bad_input.py and test_chunks.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import example_chunks, write_chunks


def run_failing(workflow, *args, env=None) -> str:
    done = workflow.snakemake(*args, check=False, env=env)
    console = done.stdout + done.stderr
    assert done.returncode != 0, console
    assert "Traceback" not in console, console
    return console


def assert_no_model_job_ran(workflow):
    assert not list(workflow.path("results/embeddings").glob("*.parquet*"))
    assert not workflow.path("results/logs/embed").exists()


def without(name: str) -> dict:
    return {key: value for key, value in os.environ.items() if key != name}


# --- the run's environment: checked at its start, when it has database jobs ----------------


def test_an_unset_dsn_variable_stops_the_run_before_any_job(workflow):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN_MISSING"})
    console = run_failing(workflow, env=without("EMBEDFLOW_DSN_MISSING"))
    assert ("Before any job: database.dsn_env names the environment variable EMBEDFLOW_DSN_MISSING, "
            "which is not set; export it") in console
    assert not workflow.path("results").exists()  # not even preflight ran


def test_an_unreachable_server_stops_the_run_before_any_job(workflow):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN"})
    console = run_failing(workflow, env={"EMBEDFLOW_DSN": "postgresql://rag:hunter2@127.0.0.1:9/rag"})
    assert "Before any job: cannot connect to the database" in console and "port=9" in console
    assert "hunter2" not in console
    assert not workflow.path("results").exists()


@pytest.fixture
def old_pgvector(password_server):
    """A database on a real server whose catalog says pgvector 0.6.0 (only 0.8's install
    script ships, so the older version is written into pg_extension by hand)."""
    import psycopg

    dsn, _ = password_server
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS old_pgvector")
        admin.execute("CREATE DATABASE old_pgvector")
    old = dsn.rsplit("/", 1)[0] + "/old_pgvector"
    with psycopg.connect(old, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION vector")
        connection.execute("UPDATE pg_extension SET extversion = '0.6.0' WHERE extname = 'vector'")
    yield old
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE old_pgvector")


def test_pgvector_older_than_0_7_stops_the_run_before_any_job(workflow, old_pgvector):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN"})
    console = run_failing(workflow, env={"EMBEDFLOW_DSN": old_pgvector})
    assert "Before any job: pgvector 0.6.0 is too old: halfvec, bit indexes and binary_quantize need >= 0.7.0" in console
    assert not workflow.path("results").exists()


def test_the_database_is_reached_only_by_a_real_run_with_database_jobs(workflow):
    workflow.update_config(precisions=["float32"], database={"dsn_env": "EMBEDFLOW_DSN_MISSING"})
    env = without("EMBEDFLOW_DSN_MISSING")
    assert workflow.snakemake("--dry-run", env=env).returncode == 0  # plans with the DSN unset
    done = workflow.snakemake("--cores", "1", "results/preflight.json", env=env)  # no table among the targets
    assert "Before any job" not in done.stdout + done.stderr
    assert json.loads(workflow.path("results/preflight.json").read_text())["corpus"]["accepted"] == 12


# --- the small inputs the run's jobs will read: at its start too ----------------------------


def test_a_bad_query_set_stops_the_run_before_any_job(workflow):
    workflow.path("data/queries.jsonl").write_text(
        '{"query_id": "q1", "query": "read a file", "relevant": ["x"]}\n{"query_id": "q2"}\n')
    workflow.update_config(queries="data/queries.jsonl")
    console = run_failing(workflow)
    assert "Before any job: data/queries.jsonl, line 2: expected {query_id, query, relevant: [ids]}" in console
    assert not workflow.path("results").exists()


def test_a_bad_pairs_file_stops_the_run_before_any_job(workflow):
    workflow.path("data/pairs.jsonl").write_text('{"query": "", "positive": "some text"}\n')
    config = workflow.config
    config["models"]["small"] = {"base": "minilm", "projection_head": {"dim": 8, "pairs": "data/pairs.jsonl"}}
    workflow.set_config(config)
    console = run_failing(workflow)
    assert "Before any job: data/pairs.jsonl: line 1: 'query' must be a non-empty string" in console
    assert not workflow.path("results").exists()


@pytest.mark.parametrize("contents, message", [
    ({"README.md": "not an adapter"}, "data/adapter: not a PEFT adapter folder (it has no adapter_config.json)"),
    ({"adapter_config.json": "{oops"}, "data/adapter/adapter_config.json: not valid JSON"),
])
def test_an_adapter_that_does_not_parse_stops_the_run_before_any_job(workflow, contents, message):
    folder = workflow.path("data/adapter")
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    config = workflow.config
    config["models"]["minilm"]["adapter"] = "data/adapter"
    workflow.set_config(config)
    console = run_failing(workflow)
    assert f"Before any job: {message}" in console
    assert not workflow.path("results").exists()


# --- the corpus and the disk: rule preflight, which every model job waits for ---------------


def test_a_chunks_file_in_utf16_fails_preflight_with_how_to_convert(workflow):
    path = workflow.path("data/chunks.json")
    path.write_bytes(path.read_text().encode("utf-16"))  # what Windows PowerShell 5's `>` writes
    console = run_failing(workflow)
    assert ("data/chunks.json: the file is UTF-16 little-endian (with a byte-order mark), not UTF-8; convert it, "
            "e.g. `iconv -f UTF-16LE -t UTF-8 data/chunks.json > data/chunks.utf8.json`") in console
    assert_no_model_job_ran(workflow)


def test_a_chunks_file_with_a_utf8_bom_is_embedded(workflow):
    chunks = example_chunks(5)
    path = write_chunks(workflow.path("data/chunks.jsonl"), chunks)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Set-Content -Encoding utf8 in PowerShell 5
    workflow.update_config(chunks="data/chunks.jsonl", precisions=["float32"])
    workflow.snakemake("--cores", "1", "results/embeddings/embeddings_minilm_float32.parquet")
    from embedflow.embeddings_file import read_all

    _, rows = read_all(workflow.path("results/embeddings/embeddings_minilm_float32.parquet"))
    assert rows.ids == [str(chunk["id"]) for chunk in chunks]


@pytest.fixture
def small_embeddings_disk(workflow):
    """results/embeddings on a 16 kB file system (a tmpfs; needs the right to mount)."""
    folder = workflow.path("results/embeddings")
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        (folder / ".keep").write_text("")  # not empty: Snakemake removes empty output folders
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_too_little_disk_for_the_planned_outputs_fails_preflight(workflow, small_embeddings_disk):
    console = run_failing(workflow)
    assert "not enough disk: the outputs still to make (embeddings files) need about" in console
    assert re.search(r"need about [\d.]+ kB in results/embeddings, results/embeddings/shards, and that file system has 1\d\.\d kB free", console)
    assert_no_model_job_ran(workflow)
