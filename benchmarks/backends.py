#!/usr/bin/env python3
"""Encoder backends on the bundled model: ONNX and OpenVINO, float32 and int8, against torch.

Targets (issue "Encoder backends"):

* an int8 backend at >= 2x the throughput of a bare torch float32 ``encode`` of the same
  texts, keeping >= 99 % of torch float32's nDCG@10 on the example's queries;
* the whole example chain to an indexed table (one model, float32, the int8 backend) in
  <= 0.8x the time of a bare torch script (encode, COPY into pgvector, HNSW index).

Every measurement runs in a fresh child process (no thread pool, allocator or oneDNN state
shared between runtimes), with the same thread count (``--threads``, default 2):

* ``bare``: ``SentenceTransformer(bundled folder, device="cpu")`` and
  ``encode(texts, batch_size=32, normalize_embeddings=True)``: the throughput baseline;
* ``torch``, ``onnx``, ``onnx-int8`` (``quantization_config`` avx2), ``onnx-int8-vnni``
  (avx512_vnni), ``openvino``, ``openvino-int8``: embedflow's encoder
  (``embedflow.encoder.load_encoder``; the exported ones from a graph that
  ``embedflow.backends.export.export_model`` writes first, timed apart as "export s"),
  encoding the same texts, then the example's queries. Vectors against torch float32's: mean
  and min cosine per chunk; nDCG@10 through ``embedflow.evaluate.exact_rankings`` and
  ``embedflow.metrics.retrieval_metrics`` on Parquet files written by the project's writer.

``--chain`` adds the whole chain: ``snakemake --cores <threads> --resources gpu=1`` on a copy
of the workflow (preflight, export_backend, embed, probe, measure, verify, load, index of
model ``minilm`` with ``--chain-backend``, default openvino-int8, float32, no queries) against ``bare-chain``: one
script that loads the model, encodes, starts the embedded server, creates the table, COPYs
the rows, builds the HNSW index (m 16, ef_construction 64) and stops the server. Both are
timed as whole processes, Python's start and imports included (the bare script's imports of
torch and sentence-transformers take about 8 s on these 2 cores; every model job of the
workflow pays them too).

Usage::

    python benchmarks/backends.py                  # the example's 350 chunks, 40 queries
    python benchmarks/backends.py --chain           # and the whole chain against the bare script
    python benchmarks/backends.py --variants bare,onnx-int8 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))

import _common as common  # noqa: E402

CHUNKS = REPO / "data/example/chunks.json"
QUERIES = REPO / "data/example/queries.jsonl"
BATCH = 32
BACKENDS = {  # variant: its model settings
    "torch": {"backend": "torch"},
    "onnx": {"backend": "onnx"},
    "onnx-int8": {"backend": "onnx", "quantization": "int8"},  # quantization_config: avx2
    "onnx-int8-vnni": {"backend": "onnx", "quantization": "int8", "quantization_config": "avx512_vnni"},
    "openvino": {"backend": "openvino"},
    "openvino-int8": {"backend": "openvino", "quantization": "int8"},
}


def texts_and_queries():
    from embedflow.query_set import read_queries

    chunks = json.loads(CHUNKS.read_text())
    query_ids, queries, relevant = read_queries(QUERIES)
    return [c["id"] for c in chunks], [c["content"] for c in chunks], query_ids, queries, relevant


# --- children ---------------------------------------------------------------------------


def child_bare(threads: int, out: Path) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from embedflow.bundled import bundled_folder

    torch.set_num_threads(threads)
    _, texts, *_ = texts_and_queries()
    started = time.perf_counter()
    model = SentenceTransformer(str(bundled_folder("all-MiniLM-L6-v2")), device="cpu")
    loaded = time.perf_counter()
    cpu = time.process_time()
    model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    ended = time.perf_counter()
    return {"load_s": loaded - started, "encode_s": ended - loaded, "rows": len(texts),
            "encode_cpu_s": time.process_time() - cpu}


def child_backend(variant: str, threads: int, out: Path) -> dict:
    from embedflow import encoder as encoders
    from embedflow.backends.export import export_model
    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_text

    spec = common.model_spec(**BACKENDS[variant])
    backend, quantization = spec["backend"], spec["quantization"]
    encoders.set_threads(threads)
    ids, texts, query_ids, queries, _ = texts_and_queries()
    result = {"rows": len(texts)}
    if backend != "torch":
        folder = out / f"export-{variant}"
        if not (os.environ.get("REUSE_EXPORTS") and (folder / "export.json").is_file()):
            started = time.perf_counter()
            identity = encoders.model_identity(spec, encoders.resolve_source(spec["source"]), False)
            export_model("minilm", spec, folder, identity)
            result["export_s"] = time.perf_counter() - started
        spec["export_folder"] = str(folder)
    started = time.perf_counter()
    encoder = encoders.load_encoder("minilm", spec, "cpu", False)
    loaded = time.perf_counter()
    cpu = time.process_time()
    vectors = encoder.encode(texts, None, BATCH)
    ended = time.perf_counter()
    result["encode_cpu_s"] = time.process_time() - cpu
    query_vectors = encoder.encode(queries, None, BATCH)
    # The first 8 chunks again, in a batch of their own (as rule probe re-encodes them): dynamic
    # int8 takes activation ranges per batch, so its vectors depend on the batch.
    again = encoder.encode(texts[:8], None, 8)
    result.update(load_s=loaded - started, encode_s=ended - loaded,
                  rebatched_min_cosine=float((again * vectors[:8]).sum(axis=1).min()))
    for name, rows, row_ids, row_texts in (("corpus", vectors, ids, texts), ("queries", query_vectors, query_ids,
                                                                              queries)):
        meta = EmbeddingsMetadata(model="minilm", model_source=spec["source"], dim=encoder.dim, precision="float32",
                                  normalized=True, compute_precision="float32", text_field="content",
                                  corpus_sha256="-", backend=backend, quantization=quantization)
        with EmbeddingsWriter(out / f"{variant}.{name}.parquet", meta) as writer:
            writer.write(row_ids, rows, [sha256_text(t) for t in row_texts])
    return result


def run_child(args: list[str]) -> dict:
    """The child's JSON result, with ``process_s``: its whole run (interpreter start and imports
    included), as a user's ``time python script.py`` would see it."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-4000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


# --- quality, through the project's evaluate code ----------------------------------------


def quality(out: Path, variant: str) -> dict:
    import numpy as np

    from embedflow.embeddings_file import read_all
    from embedflow.evaluate import exact_rankings
    from embedflow.metrics import retrieval_metrics

    _, _, query_ids, _, relevant = texts_and_queries()
    _, reference = read_all(out / "torch.corpus.parquet")
    _, rows = read_all(out / f"{variant}.corpus.parquet")
    cosines = (reference.vectors * rows.vectors).sum(axis=1)  # both normalized
    _, queries = read_all(out / f"{variant}.queries.parquet")
    rankings = exact_rankings(out / f"{variant}.corpus.parquet", query_ids, queries.vectors)
    metrics = retrieval_metrics(rankings, relevant)
    return {"mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines)),
            "ndcg@10": metrics["ndcg@10"]}


# --- the whole chain ----------------------------------------------------------------------


def chain_corpus(out: Path) -> Path:
    """The chunks of the chain: the example's, or (CHAIN_CORPUS=all) every real docstring chunk."""
    if os.environ.get("CHAIN_CORPUS") == "all":
        return common.real_corpus(out)
    return CHUNKS


def read_chunks(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.suffix == ".json" else common.read_jsonl(path)


def child_bare_chain(threads: int, out: Path) -> dict:
    """The bare script: model, encode, embedded server, table, COPY, HNSW index, stop."""
    import torch
    from pgvector.psycopg import register_vector
    import psycopg
    from sentence_transformers import SentenceTransformer

    from embedflow.bundled import bundled_folder
    from embedflow.database import embedded_server

    torch.set_num_threads(threads)
    shutil.rmtree(out / "bare-pgdata", ignore_errors=True)  # a new database each run, as the workflow's
    started = time.perf_counter()
    chunks = read_chunks(chain_corpus(out))
    model = SentenceTransformer(str(bundled_folder("all-MiniLM-L6-v2")), device="cpu")
    vectors = model.encode([c["content"] for c in chunks], batch_size=BATCH, normalize_embeddings=True)
    encoded = time.perf_counter()
    with embedded_server(out / "bare-pgdata") as dsn, psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        connection.execute(f"CREATE TABLE chunks (id text PRIMARY KEY, content text, embedding vector({vectors.shape[1]}))")
        with connection.cursor() as cursor, cursor.copy("COPY chunks (id, content, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "vector"])
            for chunk, vector in zip(chunks, vectors):
                copy.write_row((str(chunk["id"]), chunk["content"], vector))
        connection.execute("CREATE INDEX ON chunks USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)")
    return {"seconds": time.perf_counter() - started, "encode_s": encoded - started}


def workflow_chain(threads: int, out: Path, settings: dict) -> dict:
    import yaml

    root = out / "workflow"
    shutil.rmtree(root, ignore_errors=True)
    common.copy_workflow(root)
    config_path = root / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.update(chunks=str(chain_corpus(out)), queries=None, precisions=["float32"],
                  models={"minilm": {"source": "bundled:all-MiniLM-L6-v2", **settings}})
    config["embed"]["threads"] = threads
    config_path.write_text(yaml.safe_dump(config))
    target = "results/db/minilm_float32.index.json"

    def run() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", str(threads), "--resources", "gpu=1"],
                       cwd=root, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return time.perf_counter() - started

    first = run()
    embed_s = sum(float(path.read_text().splitlines()[1].split("\t")[0])  # one file per shard
                  for path in (root / "results/benchmarks/embed/minilm").glob("*.tsv"))
    # Again with the export kept (as after a corpus change): everything else made anew.
    for path in (root / "results").iterdir():
        if not path.name.startswith("backends"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {"seconds": first, "embed_tsv_s": embed_s, "export_kept_s": run()}


# --- the parent -------------------------------------------------------------------------


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="bare," + ",".join(BACKENDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, and of each chain (medians)")
    parser.add_argument("--chain", action="store_true", help="also the whole chain against the bare script")
    parser.add_argument("--chain-only", action="store_true", help="only the chain against the bare script")
    parser.add_argument("--chain-backend", default="openvino-int8", choices=[v for v in BACKENDS if v != "torch"])
    parser.add_argument("--chain-corpus", default="example", choices=["example", "all"],
                        help="the chain's chunks: the example's 350, or all ~3,778 real docstring chunks")
    parser.add_argument("--reuse-exports", action="store_true",
                        help="keep the export folders a run before left in --workdir (not timed again)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.workdir or tempfile.mkdtemp(prefix="efbackends-"))
    os.environ["CHAIN_CORPUS"] = args.chain_corpus  # the children read it too
    if args.reuse_exports:
        os.environ["REUSE_EXPORTS"] = "1"
    if args.child:
        kind = {"bare": child_bare, "bare-chain": child_bare_chain}.get(args.child)
        result = kind(args.threads, out) if kind else child_backend(args.child, args.threads, out)
        result["load_average"] = os.getloadavg()[0]  # the 1-minute load when the child ended
        print(json.dumps(result))
        return
    out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    if "torch" not in variants:
        variants.insert(0, "torch")  # the reference for cosines and nDCG
    base = ["--threads", str(args.threads), "--workdir", str(out), "--chain-corpus", args.chain_corpus]
    results = {}
    for variant in [] if args.chain_only else variants:
        runs = [run_child(["--child", variant, *base]) for _ in range(args.repeats)]
        runs.sort(key=lambda run: run["encode_s"])
        exported = [run["export_s"] for run in runs if "export_s" in run]  # the first run exports
        results[variant] = {**runs[len(runs) // 2], **({"export_s": exported[0]} if exported else {})}
    if args.chain_only:
        return print_chain(args, base, out)
    bare_rate = results["bare"]["rows"] / results["bare"]["encode_s"] if "bare" in results else None
    bare_cpu_rate = results["bare"]["rows"] / results["bare"]["encode_cpu_s"] if "bare" in results else None
    reference = quality(out, "torch")
    rows = []
    for variant, result in results.items():
        rate = result["rows"] / result["encode_s"]
        measured = quality(out, variant) if variant != "bare" else {}
        rows.append([
            variant, f"{result.get('export_s', 0):.1f}" if "export_s" in result else "–",
            f"{result['load_s']:.2f}", f"{result['encode_s']:.2f}", f"{rate:.1f}",
            f"{rate / bare_rate:.2f}" if bare_rate else "–",
            f"{result['rows'] / result['encode_cpu_s']:.1f}",
            f"{(result['rows'] / result['encode_cpu_s']) / bare_cpu_rate:.2f}" if bare_cpu_rate else "–",
            f"{measured['mean_cosine']:.6f}" if measured else "–", f"{measured['min_cosine']:.6f}" if measured else "–",
            f"{measured['ndcg@10']:.4f}" if measured else "–",
            f"{measured['ndcg@10'] / reference['ndcg@10']:.4f}" if measured else "–",
            f"{result['rebatched_min_cosine']:.6f}" if "rebatched_min_cosine" in result else "–",
            f"{result.get('load_average', 0):.1f}",
        ])
    print(json.dumps(common.machine_facts()))
    print(f"{len(texts_and_queries()[1])} chunks, {len(texts_and_queries()[2])} queries, batch {BATCH}, "
          f"{args.threads} threads, {args.repeats} run(s) each (median)\n")
    print(table(rows, ["variant", "export s", "load s", "encode s", "chunks/s", "x bare fp32", "chunks per CPU-s",
                       "x bare fp32 (CPU)", "mean cos vs torch",
                       "min cos vs torch", "nDCG@10", "share of torch nDCG@10",
                       "min cos, 8 chunks re-batched", "load avg"]))
    if args.chain:
        print_chain(args, base, out)
    print(f"\nworkdir {out}")


def print_chain(args, base: list[str], out: Path) -> None:
    bares, chains = [], []
    for _ in range(args.repeats):  # alternated, so that a slow spell of the machine hits both
        bares.append(run_child(["--child", "bare-chain", *base]))
        chains.append(workflow_chain(args.threads, out, BACKENDS[args.chain_backend]))
    bare = {key: median([run[key] for run in bares]) for key in bares[0]}
    chain = {key: median([run[key] for run in chains]) for key in chains[0]}
    script_s = bare["process_s"]  # as the workflow's figures, Python's start and imports included
    print()
    print(table([["bare script (torch fp32, COPY, HNSW), the whole process", f"{script_s:.1f}", "1.00"],
                 [f"workflow, backend {args.chain_backend}, to the index", f"{chain['seconds']:.1f}",
                  f"{chain['seconds'] / script_s:.2f}"],
                 ["the same, export already made", f"{chain['export_kept_s']:.1f}",
                  f"{chain['export_kept_s'] / script_s:.2f}"]],
                ["chain", "s", "x bare script"]))
    print(f"\n{len(read_chunks(chain_corpus(out)))} chunks, {args.repeats} run(s) of each (medians); bare script: {bare['seconds']:.1f} s after its imports, "
          f"of which encode {bare['encode_s']:.1f} s; workflow embed job {chain['embed_tsv_s']:.1f} s")


if __name__ == "__main__":
    main()
