"""Planning time: `snakemake -n` on the default config and on 3 models × 4 precisions.

    python benchmarks/plan_time.py [--repeats 5]

Runs on a temporary copy of the workflow (nothing is built), reports the median
wall time of the whole `snakemake -n` command and prints a Markdown table.
Goal (issue 5): under 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import copy_workflow


def three_by_four(folder: Path) -> None:
    path = folder / "config/config.yaml"
    config = yaml.safe_load(path.read_text())
    config["models"] = {
        "minilm": {"source": "bundled:all-MiniLM-L6-v2"},
        "qwen4b": {"source": "Qwen/Qwen3-Embedding-4B", "compute_precision": "bfloat16"},
        "qwen4b_1024": {"source": "Qwen/Qwen3-Embedding-4B", "truncate_dim": 1024},
    }
    config["precisions"] = ["float32", "float16", "int8", "binary"]
    path.write_text(yaml.safe_dump(config))


def plan_seconds(folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=folder,
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    total = next(int(line.split()[-1]) for line in done.stdout.splitlines() if line.startswith("total"))
    return seconds, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        default = copy_workflow(Path(tmp) / "default", extra=("data",))
        matrix = copy_workflow(Path(tmp) / "matrix", extra=("data",))
        three_by_four(matrix)
        for name, folder in (("default (1 model × 4 precisions)", default), ("3 models × 4 precisions", matrix)):
            runs = [plan_seconds(folder) for _ in range(args.repeats)]
            rows.append((name, runs[0][1], statistics.median(s for s, _ in runs), max(s for s, _ in runs)))
    print("| config | jobs planned | median s | max s |\n|---|---|---|---|")
    for name, jobs, median, worst in rows:
        print(f"| {name} | {jobs} | {median:.2f} | {worst:.2f} |")


if __name__ == "__main__":
    main()
