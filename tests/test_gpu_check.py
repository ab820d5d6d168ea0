"""benchmarks/gpu_check.py runs end to end: here with --tiny, on the CPU, in its own process
(as on a GPU machine: no Snakemake, no database), and its report has what the docs quote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

RUNS = ["bf16 tokens all", "bf16 tokens", "bf16 bare encode", "bf16 fixed", "fp16 tokens", "tf32 tokens"]


def test_gpu_check_tiny_on_cpu_reports_every_run_and_check(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--tiny", "--out", str(tmp_path / "out"),
         "--workdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # the CPU path, also on a machine with a GPU
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert [run["run"] for run in report["runs"]] == RUNS and report["skipped"] == []
    for run in report["runs"]:
        assert run["tokens_per_s"] > 0 and run["tflops"] > 0 and run["share_of_bf16_peak"] > 0, run
        assert run["nonfinite_rows"] == 0 and run["padded_tokens"] >= run["tokens"], run
    assert {"bfloat16", "float16", "tf32"} == set(report["matmul_peak_tflops"]) == set(report["loads"])
    assert set(report["goals"]) == {"share_of_bf16_peak", "speedup_vs_bare_encode"}
    assert set(report["agreement"]) == {"bf16 tokens", "bf16 fixed"}
    checks = report["checks"]
    assert all(item["ok"] for item in checks.values()), checks
    assert {"require_cuda_without_cuda", "cuda_n_without_cuda", "tf32_flag_tf32", "device_name_bfloat16",
            "imports"} <= set(checks)
    assert report["model"]["linear_params"] > 0 and report["model"]["num_hidden_layers"] == 2
    assert "## Checks" in (tmp_path / "out/gpu_check.md").read_text()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith("gpu_check_")]  # model folder removed
