"""Crashes and concurrent runs lose nothing and leave nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np

from conftest import SNAKEMAKE, example_chunks, write_chunks
from embedflow.embeddings_file import read_all
from embedflow.hashing import sha256_text


# The float32 file by name: Snakemake 9.27's --until stops at the checkpoint shard_plan.
FLOAT32 = "results/embeddings/embeddings_minilm_float32.parquet"


def start(workflow, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [*SNAKEMAKE, "--cores", "1", "--resources", "gpu=1", *args],
        cwd=workflow.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True,
    )


def end(run: subprocess.Popen) -> None:
    """Kill a run's whole process group (Snakemake and its jobs), if still there, and reap it."""
    try:
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.wait()


def wait_for(condition, timeout=120, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended first:\n{process.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_sigkill_during_embed_then_rerun_gives_a_complete_file(workflow):
    chunks = example_chunks(200)
    write_chunks(workflow.path("data/chunks.json"), chunks)
    workflow.update_config(precisions=["float32"])
    log = workflow.path("results/logs/gather/minilm.log")
    run = start(workflow, "--", FLOAT32)
    folder = workflow.path("results/embeddings")
    try:
        # The writer opens its temporary file once the model is loaded, then encodes into it.
        wait_for(lambda: folder.exists() and any(folder.rglob(".*.tmp")), process=run)
    finally:
        end(run)
    assert not workflow.path("results/embeddings/embeddings_minilm_float32.parquet").exists()
    leftovers = list(folder.rglob(".*.tmp"))
    assert leftovers  # the killed writer could not clean up ...

    refused = workflow.snakemake("--", FLOAT32, check=False)  # the killed run's lock is still there
    assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr
    workflow.snakemake("--unlock")
    workflow.snakemake("--", FLOAT32)
    meta, rows = read_all(workflow.path("results/embeddings/embeddings_minilm_float32.parquet"))
    assert rows.ids == [str(c["id"]) for c in chunks]
    assert rows.hashes == [sha256_text(c["content"]) for c in chunks]
    np.testing.assert_allclose(np.linalg.norm(rows.vectors, axis=1), 1, atol=1e-5)
    assert not list(folder.rglob(".*.tmp"))  # ... the next writer removed its leftovers
    assert "wrote results/embeddings/embeddings_minilm_float32.parquet: 200 rows" in log.read_text()


def test_a_second_run_in_the_same_folder_is_refused(workflow):
    write_chunks(workflow.path("data/chunks.json"), example_chunks(60))
    workflow.update_config(precisions=["float32"])
    first = start(workflow, "--", FLOAT32)
    try:
        wait_for(lambda: any(workflow.path("results/logs/embed").rglob("*.log")), process=first)
        second = workflow.snakemake("--", FLOAT32, check=False)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
        assert first.wait(timeout=300) == 0
    finally:
        end(first)
    assert workflow.path("results/embeddings/embeddings_minilm_float32.parquet").is_file()
