"""The change matrix: every config key, changed after a completed run, reruns exactly the
jobs it should (or none), as Snakemake plans them with its default rerun triggers.

Rows cover every leaf key of config.schema.yaml, model.schema.yaml and variant.schema.yaml
(test_every_schema_key_has_a_row fails on a key without one). Two completed workflows hold
them: "precisions" (model `tiny` with a LoRA adapter, every precision, a query set) and
"variants" (models `tiny` and `other`, and tiny's truncation, PCA and projection head); the
http model's rows (HTTP_ROWS) are checked on the workflow of tests/test_http_workflow.py,
which runs against an embeddings server of the test. Each row is checked by a dry run; a few
are then run for real, and every file the plan did not name keeps its mtime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Workflow, example_chunks, job_counts, job_gpus, make_workflow, planned_jobs

# --- the keys -------------------------------------------------------------------------


def resolve_ref(root: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def leaf_keys(node: dict, root: dict, prefix: tuple = ()) -> list[str]:
    """Dotted paths of a schema's leaf properties, through its local $refs."""
    if "$ref" in node:
        node = resolve_ref(root, node["$ref"])
    properties = node.get("properties")
    if not properties:
        return [".".join(prefix)]
    return [key for name, child in properties.items() for key in leaf_keys(child, root, (*prefix, name))]


def schema_keys() -> list[str]:
    """Every config key: config.schema.yaml's leaves, and those of model.schema.yaml
    (model.<key>) and variant.schema.yaml (variant.<key>), which validate each `models` entry."""
    config = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())
    assert config["properties"]["models"]["additionalProperties"] == {"type": "object"}
    keys = [key for key in leaf_keys(config, config) if key != "models"]
    for kind in ("model", "variant"):
        schema = yaml.safe_load((REPO / f"config/{kind}.schema.yaml").read_text())
        keys += [f"{kind}.{key}" for key in leaf_keys(schema, schema)]
    return keys


# --- what each key reruns ---------------------------------------------------------------

# Workflow "precisions": model tiny (adapter) x float32, float16, bfloat16, int8, binary,
# with queries: 4 precisions pgvector holds (int8 stays in Parquet), 5 evaluations, 4 sweeps
# of servable indexes and the decision report over them.
NOTHING: dict[str, int] = {}
ONE_VERIFY = {"verify": 1}  # a threshold of one precision
EVERY_VERIFY = {"verify": 5}
MEASURES = {"measure": 5, "verify": 5}
PROBE = {"probe": 1, **MEASURES}
SWEEPS = {"sweep": 4, "decision": 1}  # the sweeps read the tables and the query vectors
QUERY_PROMPT = {"probe": 1, "encode_queries": 1, **MEASURES, "evaluate": 5, "eval_summary": 1, **SWEEPS}
EVALUATION = {"encode_queries": 1, "evaluate": 5, "eval_summary": 1, **SWEEPS}
INDEXES = {"index": 4, "evaluate": 4, "eval_summary": 1, "decision": 1}  # not int8's evaluation: it reads no table
SWEPT_INDEXES = {**INDEXES, **SWEEPS}  # the index settings the sweep's candidates are built with
TABLES = {"load": 4, **SWEPT_INDEXES}
DECISION = {"decision": 1}
CORPUS = {"embed": 1, "gather": 1, "probe": 1, "convert": 4, **MEASURES, **TABLES, "evaluate": 5}
MODEL = {**CORPUS, "encode_queries": 1}


def halved(value):
    return value / 2


def thresholds(*paths: str) -> dict:
    return {f"verify.thresholds.{path}.{level}": (halved, ONE_VERIFY) for path in paths for level in ("warn", "fail")}


DRIFT = [f"drift.{p}.{m}" for p in ("float16", "bfloat16", "int8", "binary")
         for m in ("mean_cosine", "min_cosine", "top10_overlap")]

# key -> (new value, or a function of the old one; the jobs it reruns)
PRECISIONS_ROWS = {
    "queries": ("data/queries_copy.jsonl", EVALUATION),
    "precisions": (["float32", "float16", "int8", "binary"], {"eval_summary": 1, **DECISION}),  # bfloat16 dropped
    # speed, memory and device: never rerun a job (a planned run on CPU with require_cuda fails at run time)
    "embed.device": ("cpu", NOTHING),
    "embed.require_cuda": (True, NOTHING),
    "embed.threads": (1, NOTHING),
    "embed.window_rows": (5, NOTHING),
    "embed.shard_rows": (4, NOTHING),  # applies when the plan is next made: the same file
    "cache.path": ("results/cache2", NOTHING),  # where vectors are found, not what they are
    "verify.probe_queries": (lambda old: old + ["one more probe query"], PROBE),
    "verify.spot_check_k": (3, MEASURES),
    "verify.reencode_rows": (4, PROBE),
    "verify.sample_rows": (6, MEASURES),
    "verify.seed": (1, MEASURES),
    "verify.batch_rows": (512, NOTHING),
    "verify.threads": (1, NOTHING),
    **{f"verify.thresholds.norm_tolerance.{p}": (halved, ONE_VERIFY) for p in ("float32", "float16", "bfloat16")},
    **thresholds("int8_decode.within_bucket", "binary_decode.sign_agreement", *DRIFT),
    **{key: (halved, EVERY_VERIFY) for key in thresholds("self_retrieval", "model_reproduces", "adapter_max_cosine")},
    # which server and table: every load, its index and evaluation (dsn_env is planned, never run)
    "database.pgdata": ("results/pgdata2", TABLES),
    "database.dsn_env": ("EMBEDFLOW_MATRIX_DSN", TABLES),
    "database.table": ("t_{model}_{precision}", TABLES),
    # how a table is loaded (diff or full reload), never what it holds
    "database.full_reload_above": (0.9, NOTHING),
    # index definition and search settings: the index job (which keeps an index whose definition
    # did not change and measures again), and the evaluations through it
    "index.method": ("ivfflat", INDEXES),
    "index.metric": ("cosine", SWEPT_INDEXES),
    "index.m": (8, SWEPT_INDEXES),
    "index.ef_construction": (32, SWEPT_INDEXES),
    "index.lists": (1, SWEPT_INDEXES),
    "index.halfvec_for_large": (False, SWEPT_INDEXES),
    "index.binary_quantize": (True, INDEXES),
    "index.rerank_candidates": (50, SWEPT_INDEXES),
    "index.ef_search": (20, INDEXES),
    "index.probes": (2, INDEXES),
    "index.recall_sample": (10, INDEXES),
    "index.seed": (1, INDEXES),
    "index.maintenance_work_mem": ("64MB", NOTHING),  # build speed only
    "index.max_parallel_maintenance_workers": (0, NOTHING),
    "index.remeasure_recall_above": (0.5, NOTHING),  # when a kept index's recall is measured again
    # the decision report: budgets and the size it extrapolates to rerun the report alone;
    # what defines the candidates reruns the sweeps
    "decision.target_rows": (1_000_000, DECISION),
    "decision.budget.max_storage_gib": (halved, DECISION),
    "decision.budget.max_p95_ms": (halved, DECISION),
    "decision.budget.min_ndcg_share": (0.9, DECISION),
    "decision.bootstrap.resamples": (100, DECISION),
    "decision.bootstrap.seed": (1, DECISION),
    "decision.methods": (["hnsw"], SWEEPS),
    "decision.binary_quantize": (False, SWEEPS),
    "decision.ef_search": ([20, 40], SWEEPS),
    "decision.probes": ([1, 4], SWEEPS),
    # model settings of tiny (revision, trust_remote_code, normalize: planned only)
    "model.source": ("data/tiny_copy", MODEL),
    "model.revision": ("main", MODEL),
    "model.adapter": (None, MODEL),
    "model.truncate_dim": (16, MODEL),
    "model.document_prompt": ("passage: ", CORPUS),  # queries are encoded with the query prompt only
    "model.query_prompt": ("query: ", QUERY_PROMPT),
    "model.max_seq_length": (16, MODEL),
    "model.batch_size": (3, NOTHING),
    "model.max_batch_tokens": (64, NOTHING),
    "model.compute_precision": ("tf32", MODEL),
    "model.normalize": (False, MODEL),
    "model.trust_remote_code": (True, MODEL),
}

# Workflow "variants": models tiny and other, tiny_trunc, tiny_pca and tiny_head (variants
# of tiny) x float32, no queries; test mode on (a seeded sample of all 12 chunks).
AFTER_PROBES = {"measure": 1, "verify": 1, "load": 1, "index": 1}
CHAIN = {"probe": 1, **AFTER_PROBES}
# A truncation or PCA variant reduces its base's corpus file and probes: no model job.
PROJECTED_CHAIN = {"project_probes": 1, **AFTER_PROBES}
TRUNCATION = {"project": 1, **PROJECTED_CHAIN}
PCA = {"fit_pca": 1, "project": 1, **PROJECTED_CHAIN}
HEAD = {"train_head": 1, "embed": 1, "gather": 1, **CHAIN}
# Every model: the corpus is embedded by tiny, other and tiny_head, projected for the others.
# The plan of shards is made again: the embed jobs of its shards are planned once it is.
SAMPLE = {"shard_plan": 1, "gather": 3, "fit_pca": 1, "project": 2, "probe": 3, "project_probes": 2, "measure": 5, "verify": 5,
          "load": 5, "index": 5}
EVERYTHING = {**SAMPLE, "train_head": 1}  # the pairs' passages are chunks too
CORPUS_READ = {**EVERYTHING, "preflight": 1}  # rule preflight validates the chunks file's text field

# tiny's backend: its export and tiny_head's (the head inherits it; its training stays on the
# torch base), both models' embed, and every chain after them; other keeps its own export.
BACKEND = {"export_backend": 2, "embed": 2, "gather": 2, "fit_pca": 1, "project": 2, "probe": 2, "project_probes": 2,
           "measure": 4, "verify": 4, "load": 4, "index": 4}

VARIANTS_ROWS = {
    "chunks": ("data/chunks_copy.json", CORPUS_READ),
    "text_field": ("summary", CORPUS_READ),
    # Under fail a bad chunk makes nothing, so on a corpus that ran, the policy changes no output
    # (the run's start refuses fail over a corpus that preflight found bad chunks in).
    "on_bad_chunk": ("skip", {}),
    # the head is trained on pairs whose passages are looked up among all chunks: not on the sample
    "test_mode.max_chunks": (11, SAMPLE),
    "test_mode.sample": ("head", SAMPLE),
    "test_mode.seed": (1, SAMPLE),
    "model.backend": ("onnx", BACKEND),
    # other runs backend onnx: int8 exports it again and reruns its own chain alone
    "model.quantization": ("int8", {"export_backend": 1, "embed": 1, "gather": 1, **CHAIN}),
    # only ONNX int8 uses it (its graph and cache key: tests/test_backends.py); other's float graph does not
    "model.quantization_config": ("avx512_vnni", NOTHING),
    "variant.base": ("other", TRUNCATION),
    "variant.truncate_dim": (12, TRUNCATION),
    "variant.pca.dim": (6, PCA),
    "variant.pca.sample_rows": (10, PCA),
    "variant.pca.center": (False, PCA),
    "variant.pca.seed": (1, PCA),
    "variant.projection_head.dim": (6, HEAD),
    "variant.projection_head.pairs": ("data/pairs_copy.jsonl", HEAD),
    "variant.projection_head.epochs": (2, HEAD),
    "variant.projection_head.batch_size": (3, HEAD),
    "variant.projection_head.learning_rate": (0.01, HEAD),
    "variant.projection_head.unfreeze_backbone": (True, HEAD),
    "variant.projection_head.backbone_learning_rate": (0.001, NOTHING),  # the backbone is frozen: unused
    "variant.projection_head.scale": (10.0, HEAD),
    "variant.projection_head.seed": (1, HEAD),
}
# Workflow "http" (tests/test_http_workflow.py): model `served`, backend http on a server of
# the test, float32 up to its verify report. What changes vectors reruns its chain; limits,
# concurrency, timeout, retries, price and the key's variable rerun nothing.
HTTP_CHAIN = {"embed": 1, "gather": 1, "probe": 1, "measure": 1, "verify": 1}
HTTP_ROWS = {
    "model.http.provider": ("openai", HTTP_CHAIN),
    "model.http.model": ("minilm", HTTP_CHAIN),
    "model.http.base_url": (lambda old: old.replace("127.0.0.1", "localhost"), HTTP_CHAIN),
    "model.http.dimensions": (16, HTTP_CHAIN),
    "model.http.api_key_env": ("ANOTHER_KEY_VARIABLE", NOTHING),
    "model.http.max_inputs_per_request": (2, NOTHING),
    "model.http.max_tokens_per_request": (1000, NOTHING),
    "model.http.concurrency": (1, NOTHING),
    "model.http.timeout_s": (5, NOTHING),
    "model.http.retries": (0, NOTHING),
    "model.http.price_per_million_tokens": (0.02, NOTHING),
}
# Where a key of a model or variant is changed.
KEY_OWNERS = {"model": "tiny", "model.http": "served", "model.quantization": "other",
              "model.quantization_config": "other", "variant.base": "tiny_trunc",
              "variant.truncate_dim": "tiny_trunc", "variant.pca": "tiny_pca", "variant.projection_head": "tiny_head"}


def config_path(key: str) -> list[str]:
    parts = key.split(".")
    if parts[0] in ("model", "variant"):
        return ["models", KEY_OWNERS.get(".".join(parts[:2])) or KEY_OWNERS[parts[0]], *parts[1:]]
    return parts


def set_key(config: dict, key: str, value) -> None:
    *parents, name = config_path(key)
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    new = value(node[name]) if callable(value) else value
    assert new != node.get(name), f"{key}: the row leaves it as it is"
    node[name] = new


def edit_chunk(workflow: Workflow) -> None:
    path = workflow.path("data/chunks.json")
    chunks = json.loads(path.read_text())
    chunks[3]["content"] += " (edited)"
    path.write_text(json.dumps(chunks))


def edit_config(change):
    def apply(workflow: Workflow) -> None:
        config = workflow.config
        change(config)
        workflow.set_config(config)
    return apply


# Changes that are not one key: (workflow, what, change, the jobs it reruns)
SCENARIOS = [
    ("precisions", "nothing", lambda workflow: None, NOTHING),
    ("variants", "nothing", lambda workflow: None, NOTHING),
    ("variants", "a chunk's text", edit_chunk, CORPUS_READ),
    ("variants", "a model added", edit_config(lambda c: c["models"].update(third={"source": "data/tiny_copy"})),
     {"embed": 1, "gather": 1, **CHAIN}),
    ("variants", "tiny's document prompt reaches its variants (not other)",
     edit_config(lambda c: c["models"]["tiny"].update(document_prompt="passage: ")),
     {"embed": 2, "gather": 2, "train_head": 1, "fit_pca": 1, "project": 2, "probe": 2, "project_probes": 2, "measure": 4,
      "verify": 4, "load": 4, "index": 4}),
    ("variants", "tiny's batch size (the head's training too: untracked)",
     edit_config(lambda c: c["models"]["tiny"].update(batch_size=2)), NOTHING),
]


def rows() -> list[tuple[str, str, object, dict]]:
    keyed = [(name, key, edit_config(lambda c, key=key, value=value: set_key(c, key, value)), reruns)
             for name, table in (("precisions", PRECISIONS_ROWS), ("variants", VARIANTS_ROWS))
             for key, (value, reruns) in table.items()]
    return keyed + SCENARIOS


def test_every_schema_key_has_a_row():
    keys = schema_keys()
    assert len(keys) == len(set(keys))
    tables = (PRECISIONS_ROWS, VARIANTS_ROWS, HTTP_ROWS)
    assert sum(map(len, tables)) == len(set().union(*tables)), "a key with rows in two tables"
    rows_keys = set().union(*tables)
    assert sorted(set(keys) - rows_keys) == [], "schema keys without a row in the change matrix"
    assert sorted(rows_keys - set(keys)) == [], "rows for keys the schemas do not have"


# --- the workflows ----------------------------------------------------------------------

# Dry runs fork from a process that imported Snakemake and planned once: each is still
# Snakemake's own command line in its own process, at a fifth of the cost.
DRY_RUN_SERVER = r"""
import json, os, sys
from snakemake.cli import main


def snakemake(args):
    sys.argv = ["snakemake", *args]
    try:
        main()
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return 0


def quietly(args):
    sys.stdout.flush()
    saved = os.dup(1), os.dup(2)
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1), os.dup2(sink, 2)
    try:
        snakemake(args)
    finally:
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)


def forked(args, out):
    pid = os.fork()
    if pid == 0:
        output = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1), os.dup2(output, 2)
        code = 1
        try:
            code = snakemake(args)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


quietly(json.loads(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    print(forked(request["args"], request["out"]), flush=True)
"""


class DryRuns(Workflow):
    """A workflow whose dry runs go through DRY_RUN_SERVER; real runs as usual."""

    PREFIX = ("--cores", "1", "--resources", "gpu=1")

    def __init__(self, root: Path):
        super().__init__(root)
        self.out = root.parent / f"{root.name}.dry-run.txt"
        self.server = subprocess.Popen(
            [sys.executable, "-c", DRY_RUN_SERVER, json.dumps([*self.PREFIX, "--dry-run"])],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert self.server.stdout.readline() == "ready\n"

    def snakemake(self, *args: str, check: bool = True, env: dict | None = None):
        if "--dry-run" not in args or env:
            return super().snakemake(*args, check=check, env=env)
        self.server.stdin.write(json.dumps({"args": [*self.PREFIX, *args], "out": str(self.out)}) + "\n")
        self.server.stdin.flush()
        code = int(self.server.stdout.readline())
        done = subprocess.CompletedProcess(args, code, self.out.read_text(), "")
        if check and code != 0:
            raise AssertionError(f"snakemake {args} failed:\n{done.stdout}")
        return done

    def close(self) -> None:
        self.server.stdin.close()
        try:
            self.server.wait(timeout=30)
        finally:
            self.server.kill()


def lenient_self_retrieval(config: dict) -> None:
    # The tiny random model's 32 bits per binary row tie often: below `warn`, above `fail`.
    config["verify"]["thresholds"]["self_retrieval"] = {"warn": 0.99, "fail": 0.1}


def completed(root: Path, tiny_model: Path, models: dict, settings: dict) -> DryRuns:
    """A workflow on 12 chunks (with copies of its inputs for the rows) after a full run."""
    workflow = make_workflow(root)
    ids = [chunk["id"] for chunk in example_chunks(12)]
    queries = [{"query_id": f"q{i}", "query": f"base64 function {i}", "relevant": [ids[i]]} for i in range(3)]
    pairs = [{"query": f"what does {chunk_id} do", "positive_id": chunk_id} for chunk_id in ids[:6]]
    for name, records in (("queries", queries), ("pairs", pairs)):
        for suffix in ("", "_copy"):
            workflow.path(f"data/{name}{suffix}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copy2(workflow.path("data/chunks.json"), workflow.path("data/chunks_copy.json"))
    shutil.copytree(tiny_model, workflow.path("data/tiny_copy"))
    config = workflow.config
    config.update(models=models, **settings)
    lenient_self_retrieval(config)
    workflow.set_config(config)
    workflow.snakemake("--cores", "2")
    return DryRuns(workflow.root)


@pytest.fixture(scope="module")
def matrix_workflows(tmp_path_factory, tiny_model, tiny_lora_adapter):
    folder = tmp_path_factory.mktemp("matrix")
    settings = {
        "precisions": (
            {"tiny": {"source": str(tiny_model), "adapter": str(tiny_lora_adapter)}},
            {"precisions": ["float32", "float16", "bfloat16", "int8", "binary"], "queries": "data/queries.jsonl"},
        ),
        "variants": (
            {
                "tiny": {"source": str(tiny_model)},
                # the one model of the suite on an exported backend (its export, embed, verify)
                "other": {"source": str(tiny_model), "backend": "onnx"},
                "tiny_trunc": {"base": "tiny", "truncate_dim": 16},
                "tiny_pca": {"base": "tiny", "pca": {"dim": 8}},
                "tiny_head": {"base": "tiny", "projection_head": {
                    "dim": 8, "pairs": "data/pairs.jsonl", "epochs": 1, "batch_size": 4}},
            },
            {"precisions": ["float32"], "test_mode": {"max_chunks": 12, "sample": "random", "seed": 0}},
        ),
    }
    # Both at once: one's CPU jobs fill the cores while the other's model jobs wait for gpu=1.
    with ThreadPoolExecutor(len(settings)) as pool:
        futures = {name: pool.submit(completed, folder / name, tiny_model, *settings[name]) for name in settings}
    workflows = {name: future.result() for name, future in futures.items() if not future.exception()}
    try:
        for future in futures.values():
            future.result()  # a failed run fails the tests
        yield workflows
    finally:
        for workflow in workflows.values():
            workflow.close()


def planned_for_each(workflow: Workflow, changes) -> list[tuple[str, dict, dict]]:
    """(what, planned, expected) for each change, made to a copy of the workflow's inputs
    that is put back after its dry run."""
    inputs = [workflow.config_path, workflow.path("data/chunks.json")]
    saved = {path: path.read_text() for path in inputs}
    results = []
    for what, change, expected in changes:
        change(workflow)
        try:
            results.append((what, planned_jobs(workflow), expected))
        finally:
            for path, text in saved.items():
                path.write_text(text)
    return results


def test_change_matrix_reruns_exactly_what_is_stale(matrix_workflows):
    by_workflow = {name: [(what, change, expected) for where, what, change, expected in rows() if where == name]
                   for name in matrix_workflows}
    with ThreadPoolExecutor(len(matrix_workflows)) as pool:
        planned = pool.map(lambda name: planned_for_each(matrix_workflows[name], by_workflow[name]), by_workflow)
        results = [result for per_workflow in planned for result in per_workflow]
    assert len(results) == len(PRECISIONS_ROWS) + len(VARIANTS_ROWS) + len(SCENARIOS)
    wrong = [f"{what}: planned {planned}, expected {expected}" for what, planned, expected in results
             if planned != expected]
    assert wrong == [], "\n".join(wrong)


def test_a_forked_dry_run_plans_as_the_command_line_does(matrix_workflows):
    workflow = matrix_workflows["precisions"]
    change = edit_config(lambda c: set_key(c, "model.query_prompt", "query: "))
    [(_, forked, _)] = planned_for_each(workflow, [("query prompt", change, None)])
    [(_, plain, _)] = planned_for_each(Workflow(workflow.root), [("query prompt", change, None)])
    assert forked == plain == QUERY_PROMPT


def test_only_a_torch_models_jobs_take_a_gpu(matrix_workflows):
    """Model other runs backend onnx, on the CPU: its embed and probe ask for gpu=0 (no GPU
    slot, which would hand it a cuda:N its backend refuses; no --gpus from SLURM), while
    tiny's, on torch, ask for gpu=1."""
    workflow = matrix_workflows["variants"]
    done = workflow.snakemake("--dry-run", "--forcerun", "embed", "probe")
    gpus = job_gpus(done.stdout + done.stderr)
    assert gpus[("embed", "other")] == gpus[("probe", "other")] == {"0"}, gpus
    assert gpus[("embed", "tiny")] == gpus[("probe", "tiny")] == {"1"}, gpus


def test_a_model_on_backend_onnx_is_exported_embedded_and_verified(matrix_workflows):
    """Model other of the variants workflow runs backend onnx: its export is an input of its
    embed and probe, and verify's checks pass on it (the probe encodes through the same graph)."""
    from embedflow.embeddings_file import read_metadata

    workflow = matrix_workflows["variants"]
    manifest = json.loads(workflow.path("results/backends/other/export.json").read_text())
    assert manifest["graph_file"] == "onnx/model.onnx" and manifest["settings"]["backend"] == "onnx"
    parquet = workflow.path("results/embeddings/embeddings_other_float32.parquet")
    assert (read_metadata(parquet).backend, read_metadata(parquet).quantization) == ("onnx", None)
    graph = json.loads(workflow.path(f"{parquet.relative_to(workflow.root)}.provenance.json").read_text())
    assert graph["model"]["export"]["graph_sha256"] == {"onnx/model.onnx": manifest["files_sha256"]["onnx/model.onnx"]}
    report = json.loads(workflow.path("results/verify/other_float32.json").read_text())
    checks = {check["name"]: check for check in report["checks"]}
    assert report["status"] == "pass" and checks["model_reproduces"]["status"] == "pass"
    assert checks["model_reproduces"]["value"] >= 0.9999


# --- real reruns of a few rows ----------------------------------------------------------

RERUN = [
    ("precisions", "verify.thresholds.drift.int8.mean_cosine.warn"),  # verify only: no reload
    ("precisions", "index.ef_search"),  # index and evaluations: no reload, int8's evaluation kept
    ("precisions", "embed.window_rows"),  # nothing
    ("variants", "variant.pca.seed"),  # one variant's chain: the other models untouched
]


def planned_files(dry_run_output: str) -> set[str]:
    """Outputs, logs and benchmarks of every job a (verbose) dry run lists."""
    files = set()
    for line in dry_run_output.splitlines():
        label, _, value = line.strip().partition(": ")
        if label in ("output", "log", "benchmark"):
            files.update(value.split(", "))
    return files


def result_mtimes(workflow: Workflow) -> dict[str, int]:
    """Every file under results/ but the database server's own."""
    root = workflow.path("results")
    return {str(path.relative_to(workflow.root)): path.stat().st_mtime_ns for path in root.rglob("*")
            if path.is_file() and not path.relative_to(root).parts[0].startswith("pgdata")}


@pytest.mark.parametrize("where,key", RERUN, ids=[key for _, key in RERUN])
def test_a_rerun_touches_only_what_its_plan_names(matrix_workflows, where, key):
    workflow = matrix_workflows[where]
    table = PRECISIONS_ROWS if where == "precisions" else VARIANTS_ROWS
    value, expected = table[key]
    edit_config(lambda c: set_key(c, key, value))(workflow)
    plan = workflow.snakemake("--dry-run").stdout
    assert job_counts(plan) == expected, key
    named = planned_files(plan)
    before = result_mtimes(workflow)
    workflow.snakemake("--cores", "2")
    after = result_mtimes(workflow)
    touched = {path for path in after if before.get(path) != after[path]}
    # eval_summary writes a provenance file next to each output but declares only the table's
    sidecars = {f"{path}.provenance.json" for path in named}
    assert touched - named - sidecars == set(), f"{key}: files outside the plan were rewritten"
    assert named - touched == set(), f"{key}: planned files were not written"
    assert planned_jobs(workflow) == NOTHING, f"{key}: the run left work undone"


# --- a failed verify with --keep-going ----------------------------------------------------


def damage_rows(path: Path) -> None:
    """Rewrite an embeddings file with one row's vector changed: its provenance no longer matches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    vectors = table.column("embedding").to_pylist()
    vectors[0] = [-value for value in vectors[0]]
    column = pa.array(vectors, type=table.schema.field("embedding").type)
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", column)
    pq.write_table(table, path)


def test_with_keep_going_a_failed_verify_stops_only_its_own_load(matrix_workflows, tmp_path):
    """tiny_trunc's float32 file is damaged and the table names change: its verify fails and
    its load never runs, while every other model's load and index are made by that same run."""
    source = matrix_workflows["variants"]
    workflow = Workflow(tmp_path / "workflow")
    # cp -a keeps the owner of the database files (the server runs as its own user under root)
    subprocess.run(["cp", "-a", str(source.root), str(workflow.root)], check=True)
    damage_rows(workflow.path("results/embeddings/embeddings_tiny_trunc_float32.parquet"))
    edit_config(lambda c: set_key(c, "database.table", "t_{model}_{precision}"))(workflow)
    before = result_mtimes(workflow)
    started = time.time_ns()
    # One job at a time, the damaged file's checks first: every other job runs after the failure.
    first = "results/verify/tiny_trunc_float32.json"
    done = workflow.snakemake("--cores", "1", "--prioritize", first, "--keep-going", check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    failed = output.index("Error in rule verify:")
    loads = [line.start() for line in re.finditer(r"Finished jobid: \d+ \(Rule: load\)", output)]
    assert len(loads) == 4 and min(loads) > failed, "expected the 4 other loads, after the failed verify"
    log = workflow.path("results/logs/verify/tiny_trunc_float32.log").read_text()
    assert "verify tiny_trunc / float32 FAILED" in log and "| provenance | **FAIL** |" in log
    assert not workflow.path("results/verify/tiny_trunc_float32.json").exists()
    after = result_mtimes(workflow)
    for model in ("tiny", "other", "tiny_pca", "tiny_head"):
        for marker in (f"results/db/{model}_float32.loaded.json", f"results/db/{model}_float32.index.json"):
            assert after[marker] >= started > before[marker], marker  # made by this run
            assert json.loads(workflow.path(marker).read_text())["table"] == f"t_{model}_float32"
    for marker in ("results/db/tiny_trunc_float32.loaded.json", "results/db/tiny_trunc_float32.index.json"):
        assert after[marker] == before[marker], marker  # the failed file's load never ran
