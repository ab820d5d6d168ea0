#!/usr/bin/env python3
"""Embed-stage memory: peak RSS of ``embed_corpus`` at 2,000 against 20,000 chunks.

Target (project issue, "Embed stage"): peak RSS at 20k chunks / peak RSS at 2k
chunks <= 1.2, i.e. memory does not grow with the corpus (docs/design.md: the embed
stage streams the chunks file and writes one Parquet row group per window).

Every run is a fresh child process (``embed_corpus`` on a JSON Lines file,
model ``bundled:all-MiniLM-L6-v2``, float32 compute, batch size 32, normalize);
the parent reaps it with ``os.wait4``, so ``ru_maxrss`` is that child's own peak,
and the child also reports ``VmHWM`` from /proc/self/status: once right after
the model is loaded (by wrapping ``embedflow.encoder.load_encoder`` in the
child; the workflow code is not changed), after each window's encode (wrapping
``Encoder.encode``) and at the end. Peak minus "after model load" is the part
of the peak that the data can move.

Only ~3,778 real chunks exist (``build_corpus.py --all``); the 20k corpus repeats
them with distinct ids (copy k > 0 gets ``<id>#k``), so its first 3,778 chunks
are the real corpus and the 2k corpus is its first 2,000 chunks.

``--max-seq-length 64`` (the default here) keeps 20k chunks affordable on two
CPU cores: the question is whether memory grows with the number of chunks,
which the sequence length does not change. ``--max-seq-length 0`` uses the
model's own limit (256).

Usage::

    python benchmarks/embed_memory.py                       # 2,000 and 20,000 chunks
    python benchmarks/embed_memory.py --chunks 2000,20000 --repeats 2 --max-seq-length 64
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

WINDOW_NOTE = "embed.window_rows"


def child(args) -> None:
    import logging

    import embedflow.encoder as encoders
    from embedflow.embed import EmbedSettings, embed_corpus
    from embedflow.embeddings_file import EmbeddingsWriter

    logging.basicConfig(level=logging.ERROR)
    marks = {"after_imports_hwm_mib": common.proc_status_kib("VmHWM") / 1024}
    load_encoder = encoders.load_encoder

    def measured_load_encoder(*a, **k):
        encoder = load_encoder(*a, **k)
        marks["after_model_load_hwm_mib"] = common.proc_status_kib("VmHWM") / 1024
        return encoder

    encoders.load_encoder = measured_load_encoder
    # VmHWM / VmRSS as each window starts and ends its encode, to see whether the
    # peak is reached in the first full window or creeps up window by window.
    windows = []
    encode = encoders.Encoder.encode

    def measured_encode(self, texts, *a, **k):
        before = common.proc_status_kib("VmHWM") / 1024
        vectors = encode(self, texts, *a, **k)
        windows.append({
            "rows": len(texts),
            "hwm_before_mib": round(before),
            "hwm_after_mib": round(common.proc_status_kib("VmHWM") / 1024),
            "rss_after_mib": round(common.proc_status_kib("VmRSS") / 1024),
        })
        return vectors

    encoders.Encoder.encode = measured_encode
    write = EmbeddingsWriter.write

    def measured_write(self, *a, **k):
        write(self, *a, **k)
        windows[-1]["hwm_after_write_mib"] = round(common.proc_status_kib("VmHWM") / 1024)

    EmbeddingsWriter.write = measured_write
    settings = EmbedSettings(
        model_key="minilm",
        model=common.model_spec(
            args.model,
            batch_size=args.batch_size,
            compute_precision="float32",
            normalize=True,
            max_seq_length=args.max_seq_length or None,
        ),
        text_field="content",
        batch_size=args.batch_size,
        device="cpu",
        threads=args.threads,
        # A diagnosis only: what another window would change (default: the schema's).
        **({"window_rows": args.window_rows} if args.window_rows else {}),
    )
    start = time.perf_counter()
    result = embed_corpus(args.chunks_file, args.out, settings)
    seconds = time.perf_counter() - start
    print(json.dumps({
        **marks,
        "rows": result.rows,
        "seconds": seconds,
        "max_seq_length": result.encoder.max_seq_length,
        "window_rows": settings.window_rows,
        "end_hwm_mib": common.proc_status_kib("VmHWM") / 1024,
        "end_rss_mib": common.proc_status_kib("VmRSS") / 1024,
        "windows": windows,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default="2000,20000", help="comma-separated corpus sizes; the first is the reference")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size, interleaved")
    parser.add_argument("--max-seq-length", type=int, default=64, help="0: the model's own limit (256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument(
        "--window-rows", type=int, default=None,
        help="diagnosis: embed.window_rows for the child (default: the schema's)",
    )
    parser.add_argument(
        "--child-env", action="append", default=[], metavar="KEY=VALUE",
        help="diagnosis: environment for the child, e.g. MALLOC_MMAP_THRESHOLD_=131072",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="also write the raw figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunks-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sizes = [int(n) for n in args.chunks.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="embed-memory-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        files = {n: common.repeated_corpus(workdir, n) for n in sizes}
        runs: dict[int, list[dict]] = {n: [] for n in sizes}
        for round_ in range(args.repeats):
            for n in sizes if round_ % 2 == 0 else list(reversed(sizes)):
                out = workdir / f"embeddings_{n}.parquet"
                argv = [
                    str(Path(__file__).resolve()), "--child", "--chunks-file", str(files[n]),
                    "--out", str(out), "--model", args.model, "--batch-size", str(args.batch_size),
                    "--threads", str(args.threads), "--max-seq-length", str(args.max_seq_length),
                ]
                if args.window_rows:
                    argv += ["--window-rows", str(args.window_rows)]
                result = common.run_child(argv, dict(item.split("=", 1) for item in args.child_env))
                result["round"] = round_ + 1
                runs[n].append(result)
                out.unlink(missing_ok=True)
                print(
                    f"round {round_ + 1} {n:6d} chunks: ru_maxrss {result['peak_rss_mib']:.0f} MiB, "
                    f"VmHWM after model load {result['after_model_load_hwm_mib']:.0f} MiB, "
                    f"at end {result['end_hwm_mib']:.0f} MiB, VmRSS at end {result['end_rss_mib']:.0f} MiB, "
                    f"{result['seconds']:.0f} s; VmHWM after each window's encode / write: "
                    + ", ".join(f"{w['hwm_after_mib']} / {w.get('hwm_after_write_mib')}" for w in result["windows"]),
                    file=sys.stderr, flush=True,
                )

    def med(n: int, key: str) -> float:
        return common.median([r[key] for r in runs[n]])

    reference = sizes[0]
    rows = []
    for n in sizes:
        rows.append([
            f"{n:,}",
            len(runs[n]),
            f"{med(n, 'peak_rss_mib'):.0f}",
            f"{med(n, 'end_hwm_mib'):.0f}",
            f"{med(n, 'after_model_load_hwm_mib'):.0f}",
            f"{med(n, 'end_hwm_mib') - med(n, 'after_model_load_hwm_mib'):.0f}",
            f"{med(n, 'end_rss_mib'):.0f}",
            f"{med(n, 'seconds'):.0f}",
            f"{med(n, 'peak_rss_mib') / med(reference, 'peak_rss_mib'):.3f}",
        ])
    window = runs[reference][0]["window_rows"]
    seq = runs[reference][0]["max_seq_length"]
    changed = " (patched for this run)" if args.window_rows else ""
    env = f"; child environment {' '.join(args.child_env)}" if args.child_env else ""
    print(
        f"\nembed_corpus, float32 compute, batch size {args.batch_size}, max_seq_length {seq}, "
        f"{args.threads} torch threads, windows of {window} chunks ({WINDOW_NOTE}{changed}){env}; "
        f"medians of {args.repeats} run(s) per size, each a fresh process\n"
    )
    print(common.table(
        ["chunks", "runs", "peak RSS MiB (ru_maxrss)", "VmHWM MiB", "VmHWM after model load MiB",
         "peak - model load MiB", "VmRSS at end MiB", "seconds", f"peak ÷ peak at {reference:,}"],
        rows,
    ))
    print("\nVmHWM (MiB) after each window's encode / after its Parquet write, per run:\n")
    print(common.table(
        ["chunks", "round", "windows (rows)", "VmHWM after each window: encode / write", "end"],
        [[f"{n:,}", r["round"], " + ".join(str(w["rows"]) for w in r["windows"]),
          ", ".join(f"{w['hwm_after_mib']} / {w.get('hwm_after_write_mib', '?')}" for w in r["windows"]),
          f"{r['end_hwm_mib']:.0f}"] for n in sizes for r in runs[n]],
    ))
    for n in sizes[1:]:
        ratio = med(n, "peak_rss_mib") / med(reference, "peak_rss_mib")
        print(
            f"\npeak RSS {n:,} ÷ {reference:,} chunks: {ratio:.3f} (target <= 1.2: "
            f"{'met' if ratio <= 1.2 else 'NOT met'})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "machine": common.machine_facts(), "runs": {str(k): v for k, v in runs.items()}},
            indent=1,
        ))


if __name__ == "__main__":
    main()
