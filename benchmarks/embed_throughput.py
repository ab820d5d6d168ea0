#!/usr/bin/env python3
"""Embed-stage throughput: ``embed_corpus`` against a bare ``SentenceTransformer.encode``.

Targets (project issue, "Embed stage"):

* embed throughput on >= 2,000 real chunks / a bare ``SentenceTransformer.encode``
  of the same texts, same model, precision and batch size, same run: >= 0.95;
* bfloat16 compute / float32 compute on this CPU (reported, no target).

Every measurement runs in a fresh child process (so no allocator, oneDNN cache,
thread-pool or environment state leaks from one variant into the next), and the
variants alternate within a round: round 1 runs embed-fp32, bare-fp32,
embed-bf16, round 2 the reverse, and so on, so a slow drift (another job on the
same cores) weighs on every variant alike. Figures are medians over rounds.
Before each run the parent waits (``--wait-idle``, up to 120 s by default)
until the machine is idle, and after it records how much CPU time *other*
processes burnt while the child ran ("other jobs' CPU s"): a run with a large
figure there was disturbed, and shows which medians to trust.

What is timed, in each child, after ``import torch, sentence_transformers``:

* ``embed``: the whole ``embedflow.embed.embed_corpus(...)`` call: validating the
  chunks file, loading the model, reading, encoding, hashing and writing the
  Parquet file (fsync and rename included). Its own ``EmbedResult.timer``
  (the encode loop: read, count over-long texts, encode, hash, write; without
  validation and model load) is reported as "loop".
* ``bare``: ``SentenceTransformer(path, device="cpu")`` (load) plus
  ``model.encode(texts, batch_size=..., normalize_embeddings=True)``; the
  texts are read from the same file before the clock starts. "loop" is the
  encode call alone.

So the headline ratio includes model loading in both; the "loop" ratio
excludes it in both. Both kinds run with the same torch thread count
(``--threads``, default: all cores; ``EmbedSettings.threads`` for embed,
``torch.set_num_threads`` for bare). "chunks per CPU-s" divides by the
process CPU time of the timed region: less sensitive to other jobs than the
wall clock, though not immune (threads that wait for a descheduled peer spin).

A run counts as disturbed when other processes used more than 0.1 of a core on
average while it ran; when some but not all runs are disturbed, the medians are
printed a second time over the undisturbed runs only.

Afterwards a child times, alone and on the same texts, each step that
``embed_corpus`` performs besides the model's encode (validation, hashing the
weight files for provenance, the second read, the untruncated tokenization that
counts over-long texts, text hashes, normalization, the Parquet write), to show
where any gap would come from. The check at the end compares embed-fp32's
Parquet vectors with bare-fp32's.

Usage::

    python benchmarks/embed_throughput.py                 # 2,000 chunks, 2 rounds, 3 variants
    python benchmarks/embed_throughput.py --chunks 2000 --repeats 4 --variants embed-fp32,bare-fp32
    python benchmarks/embed_throughput.py --chunks 2000 --repeats 3 --variants embed-fp32,embed-bf16 --no-overhead
    python benchmarks/embed_throughput.py --threads 1 --repeats 4
    python benchmarks/embed_throughput.py --chunks 200 --repeats 1 --wait-idle 0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the embedflow package

import _common as common  # noqa: E402

VARIANTS = {
    # name: (kind, compute precision)
    "embed-fp32": ("embed", "float32"),
    "bare-fp32": ("bare", "float32"),
    "embed-bf16": ("embed", "bfloat16"),
}


# --- children -------------------------------------------------------------------


def child(args) -> None:
    import logging

    import torch
    import sentence_transformers  # noqa: F401  (imported before the clock in both kinds)

    logging.basicConfig(level=logging.ERROR)
    chunks = Path(args.chunks_file)
    out = Path(args.out)
    if args.child == "embed":
        from embedflow.embed import EmbedSettings, embed_corpus

        settings = EmbedSettings(
            model_key="minilm",
            model=common.model_spec(
                args.model,
                batch_size=args.batch_size,
                compute_precision=args.precision,
                normalize=True,
                max_seq_length=args.max_seq_length,
            ),
            text_field="content",
            batch_size=args.batch_size,
            device="cpu",
            threads=args.threads,
        )
        cpu_start, start = time.process_time(), time.perf_counter()
        result = embed_corpus(chunks, out, settings)
        total = time.perf_counter() - start
        record = {
            "timed_cpu_s": time.process_time() - cpu_start,
            "rows": result.rows,
            "total_s": total,
            "loop_s": result.timer.seconds,
            "threads": torch.get_num_threads(),
            "dtype": str(next(result.encoder.model.parameters()).dtype),
            "max_seq_length": result.encoder.max_seq_length,
        }
    else:
        from sentence_transformers import SentenceTransformer

        from embedflow.encoder import resolve_source

        path = resolve_source(args.model).name_or_path
        torch.set_num_threads(args.threads)
        texts = [record["content"] for record in common.read_jsonl(chunks)]
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.precision]
        cpu_start, start = time.process_time(), time.perf_counter()
        model = SentenceTransformer(path, device="cpu", model_kwargs={"dtype": dtype})
        if args.max_seq_length:
            model.max_seq_length = args.max_seq_length
        loaded = time.perf_counter()
        vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        end = time.perf_counter()
        timed_cpu = time.process_time() - cpu_start
        import numpy as np

        np.save(out, np.asarray(vectors, dtype=np.float32))
        record = {
            "timed_cpu_s": timed_cpu,
            "rows": len(texts),
            "total_s": end - start,
            "loop_s": end - loaded,
            "threads": torch.get_num_threads(),
            "dtype": str(next(model.parameters()).dtype),
            "max_seq_length": model.max_seq_length,
        }
    print(json.dumps(record))



def overhead(args) -> None:
    """Time, on the same texts, each step embed_corpus adds around the model's encode."""
    import logging

    import numpy as np
    import torch

    from embedflow.chunks import iter_chunks, validate_chunks
    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.encoder import resolve_source, weights_sha256
    from embedflow.vectors import l2_normalize
    from embedflow.hashing import sha256_text
    from transformers import AutoTokenizer

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    chunks = Path(args.chunks_file)
    model_path = resolve_source(args.model).name_or_path
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = [chunk.text for chunk in iter_chunks(chunks)]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
    meta = EmbeddingsMetadata("m", args.model, 384, "float32", True, "float32", "content", "0" * 64)

    def write() -> None:
        with EmbeddingsWriter(Path(args.out), meta) as writer:
            writer.write([f"id{i}" for i in range(len(texts))], vectors, hashes)

    hashes = [sha256_text(t) for t in texts]
    steps = {
        "validate the chunks file": lambda: validate_chunks(chunks),
        "sha256 of the model's weight files (provenance)": lambda: weights_sha256(Path(model_path)),
        "read the chunks again (stream)": lambda: list(iter_chunks(chunks)),
        "tokenize every text in full (count over-long texts)": lambda: [
            len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]
        ],
        "sha256 of every text": lambda: [sha256_text(t) for t in texts],
        "tensor -> numpy, L2-normalize in numpy": lambda: l2_normalize(torch.from_numpy(vectors).float().cpu().numpy()),
        "write the Parquet file (zstd, fsync, rename)": write,
    }
    seconds = {name: [] for name in steps}
    for _ in range(3):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    print(json.dumps({name: common.median(values) for name, values in seconds.items()}))


# --- parent -----------------------------------------------------------------------

# A run during which other processes used more than this many cores on average
# (other jobs' CPU seconds / the run's wall seconds) counts as disturbed.
DISTURBED_CORES = 0.1


def disturbed(run: dict) -> bool:
    return run["other_cpu_s"] / run["child_wall_s"] > DISTURBED_CORES


def report(runs: dict[str, list[dict]], variants: list[str]) -> str:
    """Per-variant medians and the two ratios, as Markdown."""

    def rate(name: str, key: str) -> float:
        return common.median([run["rows"] / run[key] for run in runs[name]])

    rows = [
        [
            name,
            VARIANTS[name][1],
            len(runs[name]),
            f"{common.median([r['total_s'] for r in runs[name]]):.1f}",
            f"{rate(name, 'total_s'):.1f}",
            f"{rate(name, 'loop_s'):.1f}",
            f"{rate(name, 'timed_cpu_s'):.1f}",
            f"{max(r['other_cpu_s'] for r in runs[name]):.1f}",
        ]
        for name in variants
    ]
    text = common.table(
        ["variant", "compute", "runs", "total s", "chunks/s (total)", "chunks/s (loop)",
         "chunks per CPU-s", "other jobs' CPU s (max)"],
        rows,
    )
    ratios = []
    for numerator, denominator, label, target in (
        ("embed-fp32", "bare-fp32", "embed_corpus fp32 ÷ bare encode fp32", 0.95),
        ("embed-bf16", "embed-fp32", "embed_corpus bf16 ÷ embed_corpus fp32", None),
    ):
        if numerator not in runs or denominator not in runs:
            continue
        total, loop, cpu = (
            rate(numerator, key) / rate(denominator, key) for key in ("total_s", "loop_s", "timed_cpu_s")
        )
        pairs = {}
        for run in runs[numerator]:
            pairs.setdefault(run["round"], {})["n"] = run
        for run in runs[denominator]:
            pairs.setdefault(run["round"], {})["d"] = run
        per_round = [p["d"]["total_s"] / p["n"]["total_s"] for _, p in sorted(pairs.items()) if len(p) == 2]
        status = "-" if target is None else ("met" if total >= target else "NOT met")
        ratios.append([
            label, f"{total:.3f}", f"{loop:.3f}", f"{cpu:.3f}",
            ", ".join(f"{r:.3f}" for r in per_round),
            "(reported)" if target is None else f">= {target}", status,
        ])
    if ratios:
        text += "\n\n" + common.table(
            ["throughput ratio", "total", "loop", "per CPU-s", "per round (total)", "target", "status"],
            ratios,
        )
    return text



def agreement(parquet: Path, npy: Path) -> dict:
    """How close embed_corpus's vectors are to the bare encode's (same texts, same order)."""
    import numpy as np

    from embedflow.embeddings_file import read_all

    _, batch = read_all(parquet)
    bare = np.load(npy)
    ours = batch.vectors.astype(np.float32)
    cosine = np.sum(ours * bare, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(bare, axis=1)
    )
    return {"max_abs_diff": float(np.max(np.abs(ours - bare))), "min_cosine": float(cosine.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2000, help="real chunks to embed (>= 2,000 for the target)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; every round runs each variant once")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both kinds")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own (256)")
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument(
        "--wait-idle", type=float, default=120.0,
        help="before each run, wait up to this many seconds for other jobs to leave the CPU (0: never)",
    )
    parser.add_argument("--workdir", default=None, help="keep corpora and outputs here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the raw figures to this file")
    # child mode (internal)
    parser.add_argument(
        "--no-overhead", action="store_true",
        help="skip timing, step by step, what embed_corpus does besides encoding",
    )
    parser.add_argument("--child", choices=("embed", "bare", "overhead"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--chunks-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "overhead":
        overhead(args)
        return
    if args.child:
        child(args)
        return

    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    for name in variants:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}")
    with tempfile.TemporaryDirectory(prefix="embed-throughput-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        chunks_file = common.head_corpus(workdir, args.chunks)
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        outputs = {}
        order_no = 0
        for round_ in range(args.repeats):
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                kind, precision = VARIANTS[name]
                out = workdir / (f"{name}.parquet" if kind == "embed" else f"{name}.npy")
                argv = [
                    str(Path(__file__).resolve()), "--child", kind, "--precision", precision,
                    "--chunks-file", str(chunks_file), "--out", str(out),
                    "--model", args.model, "--batch-size", str(args.batch_size),
                    "--threads", str(args.threads),
                ]
                if args.max_seq_length:
                    argv += ["--max-seq-length", str(args.max_seq_length)]
                waited = common.wait_for_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
                started = time.perf_counter()
                result = common.run_child(argv)
                result["waited_idle_s"] = waited
                order_no += 1
                result.update(order=order_no, round=round_ + 1, name=name, child_wall_s=time.perf_counter() - started)
                runs[name].append(result)
                outputs[name] = out
                print(
                    f"round {round_ + 1} {name:11s} total {result['total_s']:7.1f} s "
                    f"({result['rows'] / result['total_s']:6.1f} chunks/s), loop {result['loop_s']:7.1f} s "
                    f"({result['rows'] / result['loop_s']:6.1f} chunks/s), {result['dtype']}, "
                    f"{result['threads']} threads, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                    f"other jobs' CPU {result['other_cpu_s']:.1f} s in {result['child_wall_s']:.1f} s "
                    f"(waited {waited:.0f} s for an idle CPU)",
                    file=sys.stderr, flush=True,
                )
        steps = None
        if not args.no_overhead:
            steps = common.run_child([
                str(Path(__file__).resolve()), "--child", "overhead", "--chunks-file", str(chunks_file),
                "--out", str(workdir / "overhead.parquet"), "--model", args.model,
                "--threads", str(args.threads),
            ])
        check = None
        if "embed-fp32" in outputs and "bare-fp32" in outputs:
            check = agreement(outputs["embed-fp32"], outputs["bare-fp32"])

    print(
        f"\n{args.chunks} real chunks, batch size {args.batch_size}, {args.threads} torch threads, "
        f"max_seq_length {args.max_seq_length or 'model default'}; {args.repeats} rounds, medians"
    )
    print("\n### All runs\n")
    print(report(runs, variants))
    quiet = {name: [r for r in runs[name] if not disturbed(r)] for name in variants}
    if all(quiet.values()) and any(len(quiet[n]) < len(runs[n]) for n in variants):
        print(
            f"\n### Undisturbed runs only (other jobs used < {DISTURBED_CORES} of a core while the "
            "run ran)\n"
        )
        print(report(quiet, variants))
    every = sorted((r for name in variants for r in runs[name]), key=lambda r: r["order"])
    print("\n### Every run, in the order they ran\n")
    print(common.table(
        ["#", "round", "variant", "total s", "loop s", "chunks/s (total)", "timed CPU s",
         "other jobs' CPU s", "disturbed"],
        [[r["order"], r["round"], r["name"], f"{r['total_s']:.1f}", f"{r['loop_s']:.1f}",
          f"{r['rows'] / r['total_s']:.1f}", f"{r['timed_cpu_s']:.1f}", f"{r['other_cpu_s']:.1f}",
          "yes" if disturbed(r) else "no"] for r in every],
    ))
    if steps:
        loop = common.median([r["loop_s"] for r in runs.get("embed-fp32", [])] or [float("nan")])
        names = [k for k in steps if k not in ("peak_rss_mib", "cpu_s", "other_cpu_s")]
        print(
            f"\n### What embed_corpus does besides encoding ({args.chunks} chunks, each step timed "
            "alone, median of 3; validation and weight hashing are outside the loop timer)\n"
        )
        print(common.table(
            ["step", "seconds", "share of embed-fp32 median loop"],
            [[name, f"{steps[name]:.3f}", f"{steps[name] / loop:.2%}"] for name in names]
            + [["all of the above", f"{sum(steps[n] for n in names):.3f}",
                f"{sum(steps[n] for n in names) / loop:.2%}"]],
        ))
    if check:
        print(
            f"\nembed-fp32 vs bare-fp32 vectors: max |diff| {check['max_abs_diff']:.2e}, "
            f"min cosine {check['min_cosine']:.6f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "machine": common.machine_facts(), "runs": runs, "agreement": check,
             "overhead_steps_s": steps},
            indent=1,
        ))


if __name__ == "__main__":
    main()
