"""What embed jobs measured and what ``embedflow plan`` predicted, where each finds the other.

``<cache>/runs/<identity key>/<finished>-<pid>.json``: the throughput of each embed
job that encoded something (texts and tokens per model-second, on which kind of
device), from which ``plan`` estimates the next run's time. ``results/plan.json``:
the last plan, which embed's provenance shows beside what the job did. Plain
Python (no config, no Snakemake): the embed job imports it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from embedflow.atomic import write_json
from embedflow.paths import PLAN

RUNS = "runs"


def record_throughput(cache_path: str | Path, model_key: str, cache: dict) -> Path | None:
    """Keep an embed job's measured throughput in the cache, for later plans."""
    if not cache.get("texts_encoded") or not cache.get("model_seconds"):
        return None
    finished = datetime.now(UTC)
    record = {
        "model": model_key, "identity_key": cache["identity_key"], "device_kind": cache.get("device_kind"),
        "finished": finished.isoformat(),
        **{key: cache.get(key) for key in ("texts_encoded", "tokens_encoded", "model_seconds", "load_seconds",
                                            "texts_per_second", "tokens_per_second")},
    }
    folder = Path(cache_path) / RUNS / cache["identity_key"]
    return write_json(folder / f"{finished:%Y%m%dT%H%M%S%f}-{os.getpid()}.json", record)


def throughput_records(cache_path: str | Path | None) -> list[dict]:
    root = Path(cache_path) / RUNS if cache_path else None
    if root is None or not root.is_dir():
        return []
    records = []
    for path in sorted(root.glob("*/*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def prediction_for(key: str | None, corpus_sha256: str, path: str | Path = PLAN) -> dict | None:
    """What the saved plan predicted for this encoder on this corpus (None: no such plan)."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if key is None or plan.get("corpus", {}).get("sha256") != corpus_sha256:
        return None
    for entry in plan.get("models", {}).values():
        if entry.get("identity_key") == key:
            return {"cached": entry["cached"], "to_encode": entry["to_encode"], "planned_at": plan["planned_at"]}
    return None


