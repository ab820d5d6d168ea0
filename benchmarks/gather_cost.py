#!/usr/bin/env python3
"""Gather-stage benchmark: what joining the shards' parts into one float32 file costs.

Rule ``gather`` (``embedflow.gather.gather_parts``) copies every row group
(window) of every part into one file: decode, then encode again, zstd both
ways. This measures it on synthetic parts made with the workflow's own writer
(random normal float32 vectors, one row group per window, ids and hashes as
embed writes them), and extrapolates linearly in bytes to the production case,
10,000,000 rows x 2,560 dims of float32 (Qwen3-Embedding-4B, 102 GB of
vectors). The cost is linear: one pass, one window in memory at a time, the
same work per row group. Time is wall time of the gather call in this process
(after a warm-up read of the parts, so that the page cache holds them, as it
would right after the shard jobs wrote them); peak RSS is the process's
high-water mark.

Usage::

    python benchmarks/gather_cost.py                           # 40,000 rows x 2,560 dims, 8 shards
    python benchmarks/gather_cost.py --rows 100000 --dim 2560 --shards 16 --window-rows 2048
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_ROWS, TARGET_DIM = 10_000_000, 2_560


def make_parts(folder: Path, rows: int, dim: int, shards: int, window_rows: int):
    import numpy as np

    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_text
    from embedflow.shards import Shard, ShardPlan, content_digest

    rng = np.random.default_rng(0)
    per_shard = rows // shards
    plan_shards, parts, start = [], [], 0
    for number in range(shards):
        ids = [f"c{start + i}" for i in range(per_shard)]
        hashes = [sha256_text(i) for i in ids]
        digest = content_digest(zip(ids, hashes))
        windows = [min(window_rows, per_shard - at) for at in range(0, per_shard, window_rows)]
        meta = EmbeddingsMetadata("bench", "synthetic", dim, "float32", True, "bfloat16", "content", digest)
        path = folder / f"part-{number}.parquet"
        with EmbeddingsWriter(path, meta) as writer:
            at = 0
            for size in windows:
                vectors = rng.standard_normal((size, dim), dtype=np.float32)
                writer.write(ids[at : at + size], vectors, hashes[at : at + size])
                at += size
        plan_shards.append(Shard(digest[:16], digest, start, per_shard, windows, ids[0], ids[-1]))
        parts.append(path)
        start += per_shard
    corpus = {"path": "synthetic", "sha256": "0" * 64, "chunks": start, "rejected": 0, "selected": start}
    return ShardPlan(corpus, "content", window_rows, per_shard, per_shard, None, [], plan_shards), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=TARGET_DIM)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--window-rows", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from embedflow.gather import gather_parts

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        plan, parts = make_parts(folder, args.rows, args.dim, args.shards, args.window_rows)
        part_bytes = sum(path.stat().st_size for path in parts)
        for path in parts:  # warm the page cache, as right after the shard jobs
            path.read_bytes()
        output = folder / "gathered.parquet"
        started, cpu_started = time.perf_counter(), time.process_time()
        rows = gather_parts(plan, parts, output)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        out_bytes = output.stat().st_size
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vector_bytes = rows * args.dim * 4
    rate, cpu_rate = vector_bytes / seconds, vector_bytes / cpu
    target_bytes = TARGET_ROWS * TARGET_DIM * 4
    print(f"gathered {rows:,} rows x {args.dim} dims from {len(parts)} parts ({part_bytes / 2**20:,.0f} MiB "
          f"of Parquet, {out_bytes / 2**20:,.0f} MiB out) in {seconds:.2f} s wall, {cpu:.2f} s CPU: "
          f"{rate / 2**20:,.0f} MiB/s of float32 vectors by the wall clock, {cpu_rate / 2**20:,.0f} MiB/s per "
          f"CPU second; peak RSS {peak_mib:,.0f} MiB")
    # CPU time is what a busy machine does not inflate (the parts are in the page cache)
    print(f"extrapolated to {TARGET_ROWS:,} x {TARGET_DIM} float32 ({target_bytes / 1e9:,.0f} GB of vectors): "
          f"{target_bytes / cpu_rate / 60:,.1f} min of one core ({target_bytes / rate / 60:,.1f} min at this "
          "run's wall-clock rate), memory bounded by one window")


if __name__ == "__main__":
    main()
