"""Every rule's failure ends with one clear line on the console; its traceback is in its log only.

One workflow with a local model, its PCA and projection-head variants, a
second model, two precisions and a query set is run to the end once
(``every_rule_run``, tests/conftest.py). Each scenario copies it, damages files so that the
rules named fail when Snakemake reruns them, and runs it with --keep-going:
the rules that failed are exactly those, the console shows each failed job's
error line and never a Python traceback, and where the failure was not one
the workflow foresaw (``rule X failed: <type>: …``) the traceback is in that
job's log.
"""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO, Workflow, copy_of


@pytest.fixture(scope="module")
def finished(every_rule_run) -> Workflow:
    """tests/conftest.py: a local model, its PCA and head variants, a second model, float32 and
    float16, a query set."""
    return every_rule_run


def garbage(workflow, relative: str) -> None:
    """Newer than everything made from it, so its consumers rerun."""
    workflow.path(relative).write_bytes(b"this is not the file it should be\n")


def model_folder(workflow):
    garbage(workflow, "data/model/config.json")


def intermediate_files(workflow):
    garbage(workflow, "results/embeddings/embeddings_base_float32.parquet")
    garbage(workflow, "results/verify/base_head.probes.parquet")
    garbage(workflow, "results/verify/other_float32.measures.json")
    dropped = workflow.embedflow("psql", "-c", "DROP TABLE other_float16")
    assert dropped.returncode == 0, dropped.stderr
    workflow.path("results/db/other_float16.index.json").unlink()  # so the index is built again


def query_vectors_pca_and_rejected_file(workflow):
    garbage(workflow, "results/eval/other.queries.parquet")
    garbage(workflow, "results/reduce/base_pca.pca.npz")
    for marker in ("loaded", "index"):  # without the index marker, a missing load marker reruns nothing
        workflow.path(f"results/db/base_head_float16.{marker}.json").unlink()
    rejected = workflow.path("results/rejected/chunks.jsonl")
    stat = rejected.stat()
    rejected.write_text("{not a record\n")
    os.utime(rejected, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ancient: its mtime never reruns anything


def shard_part(workflow):
    # A part of its own scenario: gather failing would keep base_head's measure from running.
    [part] = workflow.path("results/embeddings/shards/base_head").glob("*.parquet")  # the head's one shard
    garbage(workflow, str(part.relative_to(workflow.root)))


def rejected_file_and_no_plan(workflow):
    rejected = workflow.path("results/rejected/chunks.jsonl")
    stat = rejected.stat()
    rejected.write_text("{not a record\n")
    os.utime(rejected, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    workflow.path("results/shards/chunks.plan.json").unlink()  # so the plan is made again, from it
    # Snakemake makes a missing intermediate file again only for a job that must run: gather's.
    workflow.path("results/embeddings/embeddings_base_float32.parquet").unlink()


def evaluation_report(workflow):
    garbage(workflow, "results/eval/base_head_float32.json")


def chunks_file(workflow):
    path = workflow.path("data/chunks.json")
    path.write_text(path.read_text().replace('"content":', '"text":', 1))


# scenario -> (damage, the rules that must fail)
SCENARIOS = {
    "model_folder": (model_folder, {"embed", "encode_queries", "train_head"}),
    "intermediate_files": (intermediate_files, {"convert", "probe", "fit_pca", "measure", "verify", "index"}),
    "shard_part": (shard_part, {"gather"}),
    "rejected_file_and_no_plan": (rejected_file_and_no_plan, {"shard_plan"}),
    # The PCA file is read for the variant's corpus, queries and probes alike.
    "query_vectors_pca_and_rejected_file": (query_vectors_pca_and_rejected_file,
                                            {"evaluate", "sweep", "project", "project_queries", "project_probes",
                                             "load"}),
    "evaluation_report": (evaluation_report, {"eval_summary", "decision"}),
    "chunks_file": (chunks_file, {"preflight"}),
}


# export_backend runs only for a model on an exported backend, which this workflow has none of
# (an export costs a minute); its refusals are tested in tests/test_backends.py.
NOT_IN_THIS_WORKFLOW = {"export_backend"}


def rule_names() -> set[str]:
    """Every rule and checkpoint the workflow's rule files define."""
    return {match[1] for path in (REPO / "rules").glob("*.smk")
            for match in re.finditer(r"^(?:rule|checkpoint) (\w+):", path.read_text(), re.M)}


def test_the_scenarios_make_every_rule_fail():
    rules = rule_names() - {"all"} - NOT_IN_THIS_WORKFLOW
    assert set().union(*(failing for _, failing in SCENARIOS.values())) == rules


def failed_jobs(console: str) -> list[tuple[str, str]]:
    """(rule, log) of each job Snakemake reports failed."""
    jobs = []
    for block in console.split("Error in rule ")[1:]:
        rule = block.split(":", 1)[0]
        log = re.search(r"^\s+log: (\S+) \(check log file", block, re.M)
        jobs.append((rule, log.group(1) if log else None))
    return jobs


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_rule_fails_with_one_line_and_no_traceback(finished, tmp_path, scenario):
    copy = copy_of(finished, tmp_path / "w")
    damage, rules = SCENARIOS[scenario]
    damage(copy)
    done = copy.snakemake("--cores", "2", "--keep-going", check=False)
    console = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in console, console
    jobs = failed_jobs(console)
    assert {rule for rule, _ in jobs} == rules, console
    for rule, log in jobs:
        errors = [line for line in copy.path(log).read_text().splitlines() if " ERROR " in line]
        assert errors, (rule, log)
        line = errors[-1].split(" ERROR ", 1)[1]
        assert line in console, (rule, line)  # the log's last error line, on the console as it is
        if f"rule {rule} failed: " in line:  # not foreseen: the traceback is in the log, for a developer
            assert f"(traceback in {log})" in line
            assert "Traceback (most recent call last)" in copy.path(log).read_text()
