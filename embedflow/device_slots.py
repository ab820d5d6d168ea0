"""Which GPU a model job gets: one slot per device, held for the job's life.

Snakemake counts ``--resources gpu=N`` but assigns no device, so N model jobs
started at once would all land on ``cuda:0``. Each job that runs a model
(rules embed, probe, encode_queries, train_head, through ``run_model_rule``)
takes the first free slot before it loads the model and keeps it until it
ends. A slot is an exclusive ``fcntl.flock`` on ``<slot dir>/<device>.lock``:
the kernel releases it when the process ends, also when it is killed, so a
dead job never keeps a GPU.

The devices, in this order of precedence:

- ``EMBEDFLOW_GPU_DEVICES`` (comma-separated torch indices): chosen by hand,
  or simulated (the tests give four on a machine without a GPU);
- ``CUDA_VISIBLE_DEVICES``, when a scheduler (or the user) set it: slot i is
  the i-th listed device, ``cuda:i`` inside the job;
- every device torch sees.

Slots are machine-wide (under the temporary directory, per user and per
SLURM allocation), so two workflows on one machine share the GPUs instead
of both taking the first ones; ``EMBEDFLOW_GPU_SLOT_DIR`` moves them. With
``embed.device: cpu`` or a pinned ``cuda:N`` no slot is taken: the config
chose. Without any GPU there is nothing to assign.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedflow import snakemake_rule

log = logging.getLogger(__name__)

DEVICES_ENV = "EMBEDFLOW_GPU_DEVICES"
SLOT_DIR_ENV = "EMBEDFLOW_GPU_SLOT_DIR"
POLL_SECONDS = 0.2  # while every slot is held (more jobs than GPUs): how often to try again
_held: list = []  # the slot this process holds, for provenance (held_record)


@dataclass(frozen=True)
class Devices:
    ids: list[str]  # the device ids, as their source names them
    source: str  # EMBEDFLOW_GPU_DEVICES | CUDA_VISIBLE_DEVICES | torch | none

    def torch_device(self, slot: int) -> str:
        # Under CUDA_VISIBLE_DEVICES torch renumbers the listed devices from 0.
        return f"cuda:{slot}" if self.source == "CUDA_VISIBLE_DEVICES" else f"cuda:{self.ids[slot]}"


@dataclass
class Slot:
    """What a job holds: a slot (None when no slot was taken) and the device policy to load with."""

    policy: str  # what to pass to encoder.load_encoder: cuda:N, or the configured policy
    configured: str = ""  # embed.device as configured
    slot: int | None = None
    device_id: str | None = None
    devices: Devices | None = None
    taken_at: float | None = None
    waited_seconds: float = 0.0
    _handle: object = field(default=None, repr=False)

    def record(self) -> dict:
        """For provenance: which slot, which device, of which list."""
        if self.slot is None:
            return {"slot": None, "policy": self.policy, "configured": self.configured}
        return {"slot": self.slot, "device_id": self.device_id, "policy": self.policy, "configured": self.configured,
                "devices": self.devices.ids, "source": self.devices.source,
                "waited_seconds": round(self.waited_seconds, 3)}


def visible_devices(environ=os.environ) -> Devices:
    for name in (DEVICES_ENV, "CUDA_VISIBLE_DEVICES"):
        value = environ.get(name)
        if value is not None and value.strip() not in ("", "-1"):
            return Devices([item.strip() for item in value.split(",") if item.strip()], name)
        if value is not None and name == "CUDA_VISIBLE_DEVICES":
            return Devices([], "none")  # a scheduler hid every GPU
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Devices([str(index) for index in range(count)], "torch" if count else "none")


def slot_dir(environ=os.environ) -> Path:
    if environ.get(SLOT_DIR_ENV):
        return Path(environ[SLOT_DIR_ENV])
    # Per allocation: two SLURM jobs on one node may both see their own GPU as device 0.
    scope = environ.get("SLURM_JOB_ID", "local")
    return Path(tempfile.gettempdir()) / f"embedflow-gpu-slots-{os.getuid()}" / scope


def try_take(folder: Path, devices: Devices) -> tuple[int, object] | None:
    """The first free slot and its open lock file, or None when every slot is held."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot, device_id in enumerate(devices.ids):
        handle = open(folder / f"{device_id}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0), handle.truncate()
        handle.write(f"{os.getpid()}\n"), handle.flush()  # who holds it, for a person looking
        return slot, handle
    return None


def wants_slot(policy: str) -> bool:
    return policy in ("auto", "cuda")


@contextlib.contextmanager
def hold_device(policy: str, environ=os.environ) -> Iterator[Slot]:
    """Take a free device slot for a ``policy`` of auto | cuda (else none), yield the policy
    to load the model with, release the slot at the end (the kernel does if the job dies)."""
    if not wants_slot(policy):
        yield Slot(policy, policy)
        return
    devices = visible_devices(environ)
    if not devices.ids:
        log.info("no GPU to assign (%s): device policy %s", devices.source, policy)
        yield Slot(policy, policy)
        return
    folder, started, warned = slot_dir(environ), time.monotonic(), False
    while (taken := try_take(folder, devices)) is None:
        if not warned:
            log.info("every GPU slot is held (%d devices): waiting for one", len(devices.ids))
            warned = True
        time.sleep(POLL_SECONDS)
    number, handle = taken
    slot = Slot(_policy_for(policy, devices, number), policy, number, devices.ids[number], devices,
                time.time(), time.monotonic() - started, handle)
    log.info("gpu slot %d taken at %.6f: device %s of %s (%s), running on %s", number, slot.taken_at,
             slot.device_id, ",".join(devices.ids), devices.source, slot.policy)
    _held.append(slot)
    try:
        yield slot
    finally:
        _held.remove(slot)
        log.info("gpu slot %d released at %.6f", number, time.time())
        handle.close()


def held_record() -> dict | None:
    """The slot this process holds now (provenance's device record names it), or None."""
    return _held[-1].record() if _held else None


def _policy_for(policy: str, devices: Devices, slot: int) -> str:
    """cuda:N of the slot when torch has CUDA; the configured policy otherwise (a simulated
    device list on a machine without a GPU runs on the CPU, as auto does there)."""
    import torch

    if torch.cuda.is_available():
        return devices.torch_device(slot)
    return policy


def run_model_rule(snakemake, main: Callable[[object], None]) -> None:
    """``snakemake_rule.run_rule`` for a rule that loads a model (``gpu=1``): the job holds a
    GPU slot from before the model loads until it ends, and its ``runtime`` param names the
    slot's device (cuda:N) in place of auto | cuda. A job with ``gpu=0`` (an http, onnx or
    openvino model's: ``backends.computes_on_gpu``) holds none."""

    def with_slot(snakemake) -> None:
        if not getattr(snakemake.resources, "gpu", 1):  # no GPU work (http, onnx, openvino): no device
            main(snakemake)
            return
        runtime = snakemake_rule.params_json(snakemake, "runtime")
        with hold_device(runtime["device"]) as slot:
            with snakemake_rule.overridden_param("runtime", {**runtime, "device": slot.policy}):
                main(snakemake)

    snakemake_rule.run_rule(snakemake, with_slot)
