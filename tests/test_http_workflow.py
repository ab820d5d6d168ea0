"""One Snakemake workflow with an http model (Voyage's schema, on the test's embeddings server):
a wrong key stops embed with a message naming the variable; with the right key the model runs
to its verify report, the provenance holds the requests, tokens and cost; no key is in any
file of the tree; and the change matrix's http rows plan what they should."""

from __future__ import annotations

import json

import pytest

from conftest import Workflow, copy_of, job_gpus, make_workflow, planned_jobs
from test_change_matrix import HTTP_ROWS, DryRuns, edit_config, set_key

KEY_ENV = "EMBEDFLOW_HTTP_KEY"
TARGET = "results/verify/served_float32.json"
WRONG_KEY = "sk-wrong-" + "fedcba9876543210" * 2


@pytest.fixture(scope="module")
def http_workflow(tmp_path_factory, embedding_server):
    """(workflow, the failed run, the server's log of the run's requests)."""
    embedding_server.reset()
    workflow = make_workflow(tmp_path_factory.mktemp("http") / "workflow")
    http = {"provider": "voyage", "model": "tiny", "base_url": embedding_server.base_url("voyage"),
            "api_key_env": KEY_ENV, "max_inputs_per_request": 5, "price_per_million_tokens": 0.18}
    workflow.update_config(models={"served": {"backend": "http", "http": http}}, precisions=["float32"])
    failed = workflow.snakemake("--cores", "2", TARGET, check=False, env={KEY_ENV: WRONG_KEY})
    workflow.snakemake("--cores", "2", TARGET, env={KEY_ENV: embedding_server.key})
    dry_runs = DryRuns(workflow.root)
    try:
        yield dry_runs, failed, embedding_server.stats()["log"]
    finally:
        dry_runs.close()


def test_a_wrong_key_stops_embed_naming_the_variable(http_workflow):
    _, failed, _ = http_workflow
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert f"model served: http://127.0.0.1" in output and f"refused the API key in ${KEY_ENV} (HTTP 401)" in output


def test_the_model_runs_and_its_provenance_has_requests_tokens_and_cost(http_workflow):
    workflow, _, requests = http_workflow
    record = json.loads(workflow.path("results/embeddings/embeddings_served_float32.parquet.provenance.json").read_text())
    http = record["http"]
    embedded = [entry for entry in requests if entry["status"] == 200 and entry["input_type"] == "document"]
    assert http["served_models"] == ["tiny-served"] == record["model"]["served_models"]
    assert http["tokens_billed"] > 0 and http["estimated_cost"] == pytest.approx(http["tokens_billed"] * 0.18 / 1e6)
    assert http["requests"] == 1 + 3 and http["retries"] == 0  # the dimension, then 5 + 5 + 2 chunks
    assert record["model"]["source"] == "http:voyage/tiny" and record["embedding"]["dim"] == 32
    # embed sent the 12 chunks as documents, probe its queries as queries and 8 chunks again as documents
    verify = workflow.config["verify"]
    assert sum(entry["inputs"] for entry in embedded) == 1 + 12 + verify["reencode_rows"]
    queries = [entry for entry in requests if entry["status"] == 200 and entry["input_type"] == "query"]
    assert sum(entry["inputs"] for entry in queries) == len(verify["probe_queries"])
    report = json.loads(workflow.path(TARGET).read_text())
    assert {check["name"]: check["status"] for check in report["checks"]}["model_reproduces"] == "pass"


def test_no_key_reaches_any_file(http_workflow, embedding_server):
    workflow, _, _ = http_workflow
    files = [path for path in workflow.root.rglob("*") if path.is_file()]
    assert any(".snakemake" in path.parts for path in files) and any(path.suffix == ".log" for path in files)
    for key in (WRONG_KEY, embedding_server.key):
        holding = [str(path) for path in files if key.encode() in path.read_bytes()]
        assert holding == [], f"the key is in {holding}"


def test_a_rerun_from_the_cache_sends_nothing_and_records_zero_cost(http_workflow, embedding_server, tmp_path):
    workflow = copy_of(Workflow(http_workflow[0].root), tmp_path / "workflow")
    parquet = "results/embeddings/embeddings_served_float32.parquet"
    sent = len(embedding_server.stats()["log"])
    workflow.snakemake("--cores", "2", parquet, "--forcerun", "embed", env={KEY_ENV: embedding_server.key})
    record = json.loads(workflow.path(parquet + ".provenance.json").read_text())
    assert (record["cache"]["texts_encoded"], record["cache"]["rows_reused"]) == (0, 12)
    assert {key: record["http"][key] for key in ("requests", "texts", "tokens_billed", "estimated_cost")} == \
        {"requests": 0, "texts": 0, "tokens_billed": 0, "estimated_cost": 0.0}
    assert record["http"]["provider"] == "voyage" and record["http"]["model"] == "tiny"
    assert embedding_server.stats()["log"][sent:] == []


@pytest.mark.parametrize("key", sorted(HTTP_ROWS))
def test_http_change_matrix_row(http_workflow, key):
    workflow, _, _ = http_workflow
    value, expected = HTTP_ROWS[key]
    saved = workflow.config_path.read_text()
    edit_config(lambda config: set_key(config, key, value))(workflow)
    try:
        assert planned_jobs(workflow, TARGET) == expected, key
    finally:
        workflow.config_path.write_text(saved)


def test_the_model_jobs_take_no_gpu(http_workflow):
    """The API does the model work: embed, probe and encode_queries of an http model ask for
    gpu=0, so they neither wait for the local model jobs nor ask SLURM for a GPU."""
    workflow, _, _ = http_workflow
    done = workflow.snakemake("--dry-run", "--forcerun", "embed", "probe", "--", TARGET)
    gpus = job_gpus(done.stdout + done.stderr)
    assert {rule for rule, _ in gpus} >= {"embed", "probe"}, done.stdout
    assert all(values == {"0"} for values in gpus.values()), gpus
