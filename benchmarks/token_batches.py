#!/usr/bin/env python3
"""Token-budget batches against fixed batches and a bare ``SentenceTransformer.encode``, on CPU.

One process, one model loaded once (the bundled all-MiniLM-L6-v2 by default), the same
synthetic SDK-documentation texts (benchmarks/_sdk_texts.py) for every variant:

* ``tokens-<N>``: ``Encoder.encode`` with ``max_batch_tokens: N`` (embedflow.token_batches),
  one variant per budget of ``--max-batch-tokens`` (a comma-separated list);
* ``fixed``: ``Encoder.encode`` with ``batch_size`` texts per batch (today's default path);
* ``bare``: ``model.encode(texts, batch_size=..., normalize_embeddings=True)`` on the same
  ``SentenceTransformer`` object.

The variants alternate within a round (A B C, then C B A, ...) so that a slow drift (other
jobs on the same cores) weighs on each alike; figures are medians over rounds. Each run
records the CPU time other processes used meanwhile ("other CPU s"). Tokens are the texts'
real tokens (truncated at max_seq_length, the same count for every variant); "padded" is
what the batches make the model compute, padding included, with sentence-transformers'
own order (by characters) for fixed and bare. "tokens per CPU-s" divides by the
process's CPU time: less sensitive to other jobs than the wall clock. The vectors of token-budget and fixed
batches are compared with bare encode's (minimum cosine).

Usage::

    python benchmarks/token_batches.py                       # 2,000 texts, 3 rounds, 2 threads
    python benchmarks/token_batches.py --texts 200 --rounds 1  # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the embedflow package

import _common as common  # noqa: E402
from _sdk_texts import percentiles, sdk_texts  # noqa: E402



def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", default="2048,8192", help="budgets, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--padding-only", action="store_true",
                        help="only count the padded tokens of each budget and of fixed batches (no encoding)")
    return parser.parse_args()


def fixed_padded_tokens(texts: list[str], lengths: list[int], batch_size: int) -> int:
    """What sentence-transformers' encode computes: sorted by characters, batch_size at a time."""
    import numpy as np

    order = np.argsort([-len(text) for text in texts])
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return int(sum(max(lengths[i] for i in batch) * len(batch) for batch in batches))


def run_variant(name: str, encoders: dict, texts: list[str], batch_size: int):
    if name == "bare":
        model = encoders["fixed"].model
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return encoders[name].encode(texts, None, batch_size)


def timed(name: str, encoders: dict, texts: list[str], batch_size: int) -> tuple[dict, object]:
    busy_before, cpu_before, start = common.cpu_busy_seconds(), time.process_time(), time.perf_counter()
    vectors = run_variant(name, encoders, texts, batch_size)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_before
    other = max(0.0, common.cpu_busy_seconds() - busy_before - cpu)
    return {"seconds": seconds, "cpu_s": cpu, "other_cpu_s": other}, vectors


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from embedflow.encoder import load_encoder, set_threads
    from embedflow.token_batches import padded_tokens, token_budget_batches

    set_threads(args.threads)
    texts = sdk_texts(args.texts, args.seed)
    fixed = load_encoder("bench", common.model_spec(args.model, batch_size=args.batch_size), "cpu", False)
    budgets = [int(budget) for budget in args.max_batch_tokens.split(",")]
    encoders = {"fixed": fixed, **{f"tokens-{b}": dataclasses.replace(fixed, max_batch_tokens=b) for b in budgets}}
    variants = [*(name for name in encoders if name != "fixed"), "fixed", "bare"]
    lengths = fixed.token_lengths(texts, "")
    real = sum(lengths)
    padded = {f"tokens-{b}": padded_tokens(token_budget_batches(lengths, b), lengths) for b in budgets}
    padded["fixed"] = padded["bare"] = fixed_padded_tokens(texts, lengths, args.batch_size)
    if args.padding_only:
        print(padding_table(padded, lengths, budgets, args.batch_size))
        return
    for name in variants:  # warm-up: first calls allocate and pick kernels
        run_variant(name, encoders, texts[:64], args.batch_size)

    runs: dict[str, list[dict]] = {name: [] for name in variants}
    vectors = {}
    for round_index in range(args.rounds):
        for name in variants if round_index % 2 == 0 else reversed(variants):
            run, vectors[name] = timed(name, encoders, texts, args.batch_size)
            runs[name].append(run)
            print(f"round {round_index + 1} {name}: {run['seconds']:.1f} s, other CPU {run['other_cpu_s']:.1f} s",
                  file=sys.stderr)

    results = {}
    for name in variants:
        seconds = statistics.median(run["seconds"] for run in runs[name])
        cosine = float(np.min(np.sum(vectors[name] * vectors["bare"], axis=1)))
        results[name] = {
            "seconds": round(seconds, 2),
            "texts_per_s": round(len(texts) / seconds, 1),
            "tokens_per_s": round(real / seconds),
            "tokens_per_cpu_s": round(real / statistics.median(run["cpu_s"] for run in runs[name])),
            "padded_tokens": padded[name],
            "padding_share": round(1 - real / padded[name], 3),
            "min_cosine_vs_bare": cosine,
            "runs_s": [round(run["seconds"], 2) for run in runs[name]],
            "other_cpu_s": [round(run["other_cpu_s"], 1) for run in runs[name]],
        }
    report = {
        "machine": common.machine_facts(),
        "settings": {**vars(args), "json": str(args.json) if args.json else None},
        "texts": len(texts),
        "real_tokens": real,
        "token_lengths": percentiles(lengths),
        "max_seq_length": fixed.max_seq_length,
        "results": results,
        "speedup_vs_bare": {name: round(results["bare"]["seconds"] / results[name]["seconds"], 3)
                            for name in variants[:-2]},
        "speedup_vs_fixed": {name: round(results["fixed"]["seconds"] / results[name]["seconds"], 3)
                             for name in variants[:-2]},
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def padding_table(padded: dict, lengths: list[int], budgets: list[int], batch_size: int) -> str:
    from embedflow.token_batches import token_budget_batches

    real = sum(lengths)
    rows = [[f"max_batch_tokens {b}", len(token_budget_batches(lengths, b)), padded[f"tokens-{b}"],
             f"{padded[f'tokens-{b}'] / real:.3f}"] for b in budgets]
    rows.append([f"fixed / bare, batch_size {batch_size} (sorted by characters)", -(-len(lengths) // batch_size),
                 padded["fixed"], f"{padded['fixed'] / real:.3f}"])
    return f"{len(lengths)} texts, {real} real tokens\n\n" + common.table(
        ["batches", "count", "padded tokens", "padded / real"], rows)


def markdown(report: dict) -> str:
    rows = [
        [name, result["seconds"], result["texts_per_s"], result["tokens_per_s"], result["tokens_per_cpu_s"],
         result["padded_tokens"],
         f"{result['padding_share']:.1%}", f"{result['min_cosine_vs_bare']:.7f}",
         ", ".join(map(str, result["runs_s"])), ", ".join(map(str, result["other_cpu_s"]))]
        for name, result in report["results"].items()
    ]
    lengths = report["token_lengths"]
    settings = report["settings"]
    return (
        f"{report['texts']} synthetic SDK texts, {report['real_tokens']} real tokens (max_seq_length "
        f"{report['max_seq_length']}; lengths p50 {lengths['p50']}, p90 {lengths['p90']}, p99 {lengths['p99']}, "
        f"max {lengths['p100']}), batch size {settings['batch_size']}, "
        f"{settings['threads']} threads, {settings['rounds']} rounds\n\n"
        + common.table(
            ["variant", "median s", "texts/s", "tokens/s", "tokens per CPU-s", "padded tokens", "padding", "min cosine vs bare",
             "runs s", "other CPU s"],
            rows,
        )
        + "\n\n"
        + "".join(f"- {name}: {report['speedup_vs_bare'][name]}x bare encode, {report['speedup_vs_fixed'][name]}x "
                  "fixed batches\n" for name in report["speedup_vs_bare"])
        + "\n" + common.facts_markdown(report["machine"])
    )


if __name__ == "__main__":
    main()
