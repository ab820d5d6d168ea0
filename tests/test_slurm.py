"""The example's chain on a real SLURM cluster through snakemake-executor-plugin-slurm.

One node on this machine (tests/slurm_cluster.py): munged, slurmctld and slurmd, configured
here. The workflow runs with profiles/slurm, its GPU requests dropped (the node has none), and
must give what a local run gives. Where SLURM is not installed the test skips, naming the
packages; where a run must not skip (.ci/run sets EMBEDFLOW_REQUIRE_SLURM=1, or CI is set),
it fails instead.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, make_workflow
from slurm_cluster import SlurmCluster, why_unusable

# Rules that talk to the embedded database: they run where snakemake runs (rules/common.smk).
LOCAL_RULES = {"load", "index", "evaluate", "sweep"}
# Status checks as often as the plugin allows (the jobs here take seconds), through squeue
# (no slurmdbd here), and no account to guess (the test cluster has none).
TEST_CLUSTER_FLAGS = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
                      "--slurm-status-command", "squeue", "--slurm-no-account")


def slurm_required() -> bool:
    return os.environ.get("EMBEDFLOW_REQUIRE_SLURM") == "1" or os.environ.get("CI", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = why_unusable()
    if reason:
        if slurm_required():
            pytest.fail(f"this run requires the SLURM test (EMBEDFLOW_REQUIRE_SLURM or CI): {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def gpu_rules() -> set[str]:
    """Rules that ask for a GPU (model jobs, shard jobs included): gpu=1, or model_gpus (one,
    none for an http, onnx or openvino model)."""
    rules = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):(.*?)(?=^rule |\Z)", smk.read_text(), re.S | re.M):
            if re.search(r"^\s+gpu=(1|model_gpus),", body, re.M):
                rules.add(name)
    return rules


def cpu_only_profile(profile: Path, folder: Path) -> Path:
    """profiles/slurm as it is, but asking for no GPU: the test node has none."""
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    for rule in gpu_rules():
        settings.setdefault("set-resources", {}).setdefault(rule, {})["gpu"] = 0
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


def slurm_jobs(workflow_root: Path, groups: set[str]) -> dict[str, str]:
    """SLURM job id -> what it ran (rule_<rule> or group_<group>), from the plugin's per-job
    logs: .snakemake/slurm_logs/<rule_x, or group_y_<its rules>>/<wildcards>/<job id>.log."""
    logs = workflow_root / ".snakemake" / "slurm_logs"
    jobs = {}
    for log in logs.rglob("*.log"):
        unit = log.relative_to(logs).parts[0]
        jobs[log.stem] = next((f"group_{g}" for g in groups if unit.startswith(f"group_{g}_")), unit)
    return jobs


def expected_slurm_jobs(planned: dict[str, int], groups: dict[str, str]) -> dict[str, int]:
    """The SLURM jobs a run of `planned` makes: one per job of a rule that runs on the cluster,
    one per group job (its rules' jobs for one model x precision) where the profile groups them."""
    expected = {}
    for rule, count in planned.items():
        if rule not in LOCAL_RULES:
            unit = f"group_{groups[rule]}" if rule in groups else f"rule_{rule}"
            expected[unit] = max(expected.get(unit, 0), count)
    return expected


def planned_rules(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):].split("\n\n")[0]
    jobs = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}
    jobs.pop("total")
    jobs.pop("all", None)
    return jobs


def vectors(workflow, model="minilm", precision="float32"):
    table = pq.read_table(workflow.path(f"results/embeddings/embeddings_{model}_{precision}.parquet"))
    return table.column("id").to_pylist(), table.column("embedding").to_pylist()


def verdict(workflow, name="minilm_float32") -> dict:
    report = yaml.safe_load(workflow.path(f"results/verify/{name}.json").read_text())
    return {"status": report["status"], **{check["name"]: check["status"] for check in report["checks"]}}


def table_rows(workflow, table="minilm_float32") -> list[tuple]:
    from embedflow.database import DatabaseSettings, connect

    with connect(DatabaseSettings(pgdata=str(workflow.path("results/pgdata")))) as connection:
        rows = connection.execute(f"SELECT id, embedding::text, text_sha256 FROM {table} ORDER BY id").fetchall()
    return rows


def test_the_chain_runs_as_slurm_jobs_and_gives_what_a_local_run_gives(slurm, loaded_workflow, tmp_path):
    workflow = make_workflow(tmp_path / "workflow")  # the chunks and model of loaded_workflow
    workflow.update_config(precisions=["float32"])
    profile = cpu_only_profile(workflow.path("profiles/slurm"), tmp_path / "profile")

    # README's command (no --cores: each job asks SLURM for its rule's threads), this profile.
    done = subprocess.run([*SNAKEMAKE, "--workflow-profile", str(profile), "--slurm-keep-successful-logs",
                           *TEST_CLUSTER_FLAGS], cwd=workflow.root, env={**slurm.env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{slurm.logs()}"

    # The first job table; the shards' embed jobs join once checkpoint shard_plan has run.
    planned = planned_rules(done.stdout + done.stderr)
    assert {"shard_plan", "gather", "probe", "load", "index"} <= set(planned), planned
    planned["embed"] = len(list(workflow.path("results/embeddings/shards/minilm").glob("*.parquet")))
    groups = dict(entry.split("=") for entry in yaml.safe_load((profile / "config.yaml").read_text())["groups"])
    submitted = slurm_jobs(workflow.root, set(groups.values()))
    ran = {unit: list(submitted.values()).count(unit) for unit in set(submitted.values())}
    assert ran == expected_slurm_jobs(planned, groups)
    completed = slurm.completed_jobs()
    assert {job: completed.get(job) for job in submitted} == dict.fromkeys(submitted, "COMPLETED")

    assert vectors(workflow) == vectors(loaded_workflow)
    assert verdict(workflow) == verdict(loaded_workflow)
    assert table_rows(workflow) == table_rows(loaded_workflow)
