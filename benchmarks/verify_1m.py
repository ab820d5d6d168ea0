#!/usr/bin/env python3
"""Verify-stage benchmark: time and peak memory of verifying 1 M x 384-dim embeddings.

Target (project issue, "Verify stage"): verify streams, so its memory stays
bounded as the corpus grows. Measured at 1,000,000 rows and at 100,000 rows,
for the float32 file and for an int8 file derived from it (which verify also
compares with the float32 file: decode, drift, neighbour overlap).

The data is synthetic and made with the workflow's own code, so every input of
the ``measure`` rule is real: random normal vectors normalized to unit length,
written by ``EmbeddingsWriter`` in row groups of 4,096 (as embed writes them),
a JSON Lines chunks file whose texts hash to the rows' ``text_sha256``, the
int8 file made by ``embedflow.convert.convert_file``, provenance records from
``write_provenance``, and a probes file (5 random unit query vectors; the
first 8 rows as the re-encoded chunks) in place of a model.

What is timed, in a fresh child process per measurement: the whole
``verify_embeddings`` call (measure, then judge) with the default
``verify`` config (sample of 1,000 rows, batches of 8,192 rows), after
``import numpy, pyarrow``. Peak RSS is the child's own high-water mark
(``VmHWM``); "other CPU s" is CPU time the rest of the machine used meanwhile
(another job on the same cores makes the time longer, not the memory).
Random vectors have no structure, so what the neighbour checks measure is
(near-)ties; the report's statuses are printed, not asserted.

Usage::

    python benchmarks/verify_1m.py                        # 1,000,000 and 100,000 rows
    python benchmarks/verify_1m.py --rows 100000 10000    # quicker
    python benchmarks/verify_1m.py --workdir /data/bench --keep
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the embedflow package

import _common as common  # noqa: E402

DIM = 384
ROW_GROUP = 4096  # rows per Parquet row group, as embed writes them
MODEL = "synthetic"
SOURCE = "synthetic:random-normal"
PRECISIONS = ("float32", "int8")


def model_slice() -> dict:
    from embedflow.config import model_output_slice

    return model_output_slice(common.model_spec(SOURCE))


# --- the data -------------------------------------------------------------------------


def make_dataset(folder: Path, rows: int, seed: int = 0) -> dict:
    """Chunks, float32 and int8 files, provenance and probes for ``rows`` rows; returns paths."""
    import numpy as np

    from embedflow.convert import convert_file
    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_file, sha256_text
    from embedflow.probes_file import Probes, write_probes
    from embedflow.provenance import Timer, write_provenance

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "chunks": folder / "chunks.jsonl",
        "float32": folder / f"embeddings_{MODEL}_float32.parquet",
        "int8": folder / f"embeddings_{MODEL}_int8.parquet",
        "probes": folder / f"{MODEL}.probes.parquet",
    }
    if all(path.exists() for path in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    with open(paths["chunks"], "w", encoding="utf-8") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": f"c{i:07d}", "content": f"synthetic chunk number {i}"}) + "\n")
    corpus_sha = sha256_file(paths["chunks"])
    meta = EmbeddingsMetadata(
        model=MODEL, model_source=SOURCE, dim=DIM, precision="float32", normalized=True,
        compute_precision="float32", text_field="content", corpus_sha256=corpus_sha,
    )
    first_rows = None
    with EmbeddingsWriter(paths["float32"], meta) as writer:
        for start in range(0, rows, ROW_GROUP):
            count = min(ROW_GROUP, rows - start)
            vectors = rng.standard_normal((count, DIM), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"c{i:07d}" for i in range(start, start + count)]
            writer.write(ids, vectors, [sha256_text(f"synthetic chunk number {i}") for i in range(start, start + count)])
            if first_rows is None:
                first_rows = (ids[:8], vectors[:8].copy())
    spec = model_slice()
    write_provenance(
        paths["float32"], rule="embed", wildcards={"model": MODEL}, config={"model": spec},
        inputs=[paths["chunks"]], timing=Timer().stop().record(rows),
        model={"source": SOURCE, "adapter_applied": False},
        extra={
            "corpus": {"path": str(paths["chunks"]), "sha256": corpus_sha, "chunks": rows, "embedded": rows},
            "embedding": {"dim": DIM, "normalized": True},
        },
    )
    convert_file(paths["float32"], paths["int8"], "int8")
    write_provenance(
        paths["int8"], rule="convert", wildcards={"model": MODEL, "precision": "int8"},
        config={"precision": "int8"}, inputs=[paths["float32"]], timing=Timer().stop().record(rows),
    )
    queries = rng.standard_normal((5, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids, documents = first_rows
    write_probes(paths["probes"], Probes(
        info={"model": MODEL, "source": SOURCE, "dim": DIM, "normalize": True, "query_prompt": None,
              "document_prompt": None, "adapter": None, "adapter_applied": False},
        kinds=["query"] * 5 + ["document"] * len(ids),
        ids=[None] * 5 + ids,
        texts=[f"synthetic query {q}" for q in range(5)] + [f"synthetic chunk number {int(i[1:])}" for i in ids],
        text_sha256=[None] * (5 + len(ids)),
        vectors=np.vstack([queries, documents]),
    ))
    return paths


# --- the child ------------------------------------------------------------------------


def child(args) -> None:
    import numpy  # noqa: F401  (imported before the clock)
    import pyarrow  # noqa: F401

    from embedflow.config import measure_slice, selection_slice, verify_slice
    from embedflow.config_file import load_config
    from embedflow.verify import VerifySettings, verify_embeddings

    folder = Path(args.folder)
    config = load_config(common.REPO / "config" / "config.yaml")
    spec = model_slice()
    settings = VerifySettings(
        model_key=MODEL,
        precision=args.precision,
        model=spec,
        selection=selection_slice({**config, "test_mode": {"max_chunks": None}}),
        checks={**measure_slice(config), "thresholds": verify_slice(config, spec, args.precision)},
        batch_rows=config["verify"]["batch_rows"],
    )
    parquet = folder / f"embeddings_{MODEL}_{args.precision}.parquet"
    float32 = folder / f"embeddings_{MODEL}_float32.parquet"
    start, cpu_start = time.perf_counter(), time.process_time()
    report = verify_embeddings(
        parquet,
        chunks=folder / "chunks.jsonl",
        provenance=f"{parquet}.provenance.json",
        embed_provenance=f"{float32}.provenance.json",
        probes=folder / f"{MODEL}.probes.parquet",
        settings=settings,
        reference=None if args.precision == "float32" else float32,
    )
    seconds = time.perf_counter() - start
    print(json.dumps({
        "vm_hwm_mib": common.proc_status_kib("VmHWM") / 1024,  # this process's own peak, from /proc
        "rows": report.summary["rows"],
        "seconds": seconds,
        "timed_cpu_s": time.process_time() - cpu_start,
        "bytes": report.summary["bytes"],
        "status": report.status,
        "not_pass": {c.name: [c.status, c.value] for c in report.checks if c.status != "pass"},
        "figures": {c.name: c.value for c in report.checks
                    if c.name in ("drift_mean_cosine", "top10_overlap", "self_retrieval", "int8_decode")},
    }))


# --- the parent -----------------------------------------------------------------------


def _short(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=None, help="where the data goes (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data for another run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.make:
        make_dataset(Path(args.folder), args.make)
        print(json.dumps({"rows": args.make}))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="embedflow-verify-bench-"))
    facts = common.machine_facts()
    results = []
    try:
        for rows in args.rows:
            folder = workdir / f"rows_{rows}"
            started = time.perf_counter()
            # In a child: a parent that grew would pass its peak on to every later child's
            # ru_maxrss (Linux keeps the high-water mark of the process image exec replaced).
            common.run_child([str(Path(__file__).resolve()), "--make", str(rows), "--folder", str(folder)])
            print(f"{rows} rows: data ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            for precision in PRECISIONS:
                common.wait_for_idle(60)
                result = common.run_child(
                    [str(Path(__file__).resolve()), "--child", "--folder", str(folder), "--precision", precision]
                )
                result["precision"] = precision
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(common.facts_markdown(facts))
    print(common.table(
        ["rows x 384", "precision", "file MB", "verify s", "rows/s", "peak RSS MiB", "other CPU s", "status",
         "not pass"],
        [
            [f"{r['rows']:,}", r["precision"], f"{r['bytes'] / 2**20:,.0f}", f"{r['seconds']:.1f}",
             f"{r['rows'] / r['seconds']:,.0f}", f"{r['vm_hwm_mib']:.0f}", f"{r['other_cpu_s']:.0f}", r["status"],
             ", ".join(f"{name} {status} ({_short(value)})" for name, (status, value) in r["not_pass"].items()) or "-"]
            for r in results
        ],
    ))
    print()
    print(json.dumps([{k: r[k] for k in ("rows", "precision", "figures")} for r in results]))


if __name__ == "__main__":
    main()
