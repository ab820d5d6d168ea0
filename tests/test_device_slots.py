"""GPU slots: each model job holds its own device, and a killed job's slot is free again.

No GPU is needed: ``EMBEDFLOW_GPU_DEVICES`` simulates the devices of a machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_workflow, planned_jobs
from embedflow.device_slots import DEVICES_ENV, SLOT_DIR_ENV, Devices, hold_device, try_take, visible_devices


def simulated(folder: Path, devices: str) -> dict:
    return {DEVICES_ENV: devices, SLOT_DIR_ENV: str(folder)}


def test_devices_come_from_the_list_then_cuda_visible_devices():
    assert visible_devices({DEVICES_ENV: "0,1,2,3"}) == Devices(["0", "1", "2", "3"], DEVICES_ENV)
    scheduled = visible_devices({"CUDA_VISIBLE_DEVICES": "5,7"})
    assert scheduled == Devices(["5", "7"], "CUDA_VISIBLE_DEVICES")
    assert scheduled.torch_device(1) == "cuda:1"  # torch numbers the visible devices from 0
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}).ids == []


def test_jobs_at_once_hold_different_slots_and_pinned_devices_take_none(tmp_path):
    environ = simulated(tmp_path, "0,1")
    with hold_device("auto", environ) as first, hold_device("auto", environ) as second:
        assert {first.slot, second.slot} == {0, 1}
        assert try_take(tmp_path, Devices(["0", "1"], DEVICES_ENV)) is None  # both held
    with hold_device("cpu", environ) as cpu, hold_device("cuda:1", environ) as pinned:
        assert cpu.slot is None and pinned.slot is None and pinned.policy == "cuda:1"
    with hold_device("auto", environ) as again:
        assert again.slot == 0  # released at the end of each job


HOLDER = """
import sys
from embedflow.device_slots import hold_device
with hold_device("auto") as slot:
    print(slot.slot, flush=True)
    sys.stdin.read()  # until the test kills it
"""


def test_a_killed_job_frees_its_slot(tmp_path):
    environ = {**os.environ, **simulated(tmp_path, "0"), "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=environ)
    try:
        assert holder.stdout.readline() == "0\n"  # it holds the only slot
        assert try_take(tmp_path, Devices(["0"], DEVICES_ENV)) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        taken = try_take(tmp_path, Devices(["0"], DEVICES_ENV))
        assert taken is not None and taken[0] == 0
        taken[1].close()
    finally:
        holder.kill()
        holder.wait()


SLOT_EVENT = re.compile(r"gpu slot (\d+) (taken|released) at ([\d.]+)")


def slot_intervals(logs: list[Path]) -> list[tuple[int, float, float]]:
    intervals = []
    for log in logs:
        events = [(int(slot), what, float(at)) for slot, what, at in SLOT_EVENT.findall(log.read_text())]
        assert [what for _, what, _ in events] == ["taken", "released"], log
        assert events[0][0] == events[1][0]
        intervals.append((events[0][0], events[0][2], events[1][2]))
    return intervals


def test_eight_shard_jobs_on_four_simulated_gpus_never_share_one(tmp_path, tiny_model):
    """One Snakemake run: 8 chunks, one shard each, 4 jobs at a time (--resources gpu=4);
    then one chunk edited: once the plan is made again, its shard alone is to be embedded."""
    workflow = make_workflow(tmp_path / "workflow", chunk_count=8)
    config = workflow.config
    config.update(models={"tiny": {"source": str(tiny_model)}}, precisions=["float32"])
    config["embed"].update(threads=1, window_rows=1, shard_rows=1)
    workflow.set_config(config)
    slots = tmp_path / "slots"
    target = "results/embeddings/embeddings_tiny_float32.parquet"
    workflow.snakemake("--cores", "4", "--resources", "gpu=4", "--", target, env=simulated(slots, "0,1,2,3"))

    logs = sorted(workflow.path("results/logs/embed/tiny").glob("*.log"))
    assert len(logs) == 8
    intervals = slot_intervals(logs)
    for slot, start, end in intervals:
        overlapping = [other for other in intervals if other[0] == slot and other != (slot, start, end)
                       and other[1] < end and start < other[2]]
        assert overlapping == [], f"slot {slot} held by two jobs at once"
    assert len({slot for slot, _, _ in intervals}) >= 2, "the jobs never ran at once"

    from embedflow.embeddings_file import read_all

    meta, rows = read_all(workflow.path(target))
    assert len(rows.ids) == 8
    record = json.loads(workflow.path(target + ".provenance.json").read_text())
    assert len(record["shards"]) == 8
    assert {shard["gpu_slot"]["slot"] for shard in record["shards"]} == {slot for slot, _, _ in intervals}

    # A corpus edit: once the plan is made again, Snakemake plans the edited chunk's shard alone.
    chunks = json.loads(workflow.path("data/chunks.json").read_text())
    chunks[3]["content"] += " (edited)"
    workflow.path("data/chunks.json").write_text(json.dumps(chunks))
    workflow.snakemake("--", "results/shards/chunks.plan.json")
    assert planned_jobs(workflow, target) == {"embed": 1, "gather": 1}
    # Run, the gathered file's provenance tells this edit's work from every part's as it was made.
    workflow.snakemake("--cores", "4", "--resources", "gpu=4", "--", target, env=simulated(slots, "0,1,2,3"))
    record = json.loads(workflow.path(target + ".provenance.json").read_text())
    since = record["since_shard_plan"]
    assert (since["shards_run"], since["texts_encoded"], since["rows_reused"], since["rows"]) == (1, 1, 0, 1)
    assert (record["cache"]["texts_encoded"], record["cache"]["rows"]) == (8, 8)  # the parts as made
