"""The vector cache at scale: open, lookups and peak memory at 1 M and 10 M keys; plan time.

    python benchmarks/cache_bench.py store --keys 1000000 10000000 [--dim 8] [--segment-rows 2048]
    python benchmarks/cache_bench.py plan --rows 100000 1000000

``store``: writes a cache of synthetic vectors (``--dim`` 8 keeps 10 M keys at
0.7 GB of disk; the index in memory does not depend on the dim, the bytes read
per hit do), then in a fresh process per measure: opening the namespace (every
segment checked), ``contains_prefixes`` of every key's prefix (what plan does,
10 % of them absent; the queries' hashing is not timed), and ``get`` of 200
windows of 2,048 keys (what embed does: keys of one window are rows written
together, each hit checked against its full key and crc32), with the process's
peak RSS.
``plan``: a synthetic corpus (variations of docstrings) of N rows with 99 % of
its texts in the cache of the bundled model, then the wall time of
``embedflow plan --json`` (the whole command: imports, config, corpus,
lookups, tokens of the 1 % to encode). Prints Markdown rows for
docs/benchmarks.md. Runs anywhere the package is installed; no farm tool.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IDENTITY = {"benchmark": "synthetic"}


def hashes(start: int, stop: int) -> list[str]:
    return [hashlib.sha256(f"text {i}".encode()).hexdigest() for i in range(start, stop)]


def build_store(folder: Path, keys: int, dim: int, segment_rows: int) -> float:
    from embedflow.cache import VectorCache

    space = VectorCache(folder).namespace(IDENTITY)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for start in range(0, keys, segment_rows):
        stop = min(start + segment_rows, keys)
        space.put(hashes(start, stop), rng.standard_normal((stop - start, dim), dtype=np.float32), {"dim": dim})
    return time.perf_counter() - started


MEASURE = r"""
import json, resource, sys, time, hashlib
import numpy as np
sys.path.insert(0, sys.argv[1])
from embedflow.cache import VectorCache
folder, keys, what = sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
space = VectorCache(folder).namespace({"benchmark": "synthetic"})
opened = time.perf_counter() - t
out = {"open_s": round(opened, 2), "entries": space.rows, "segments": len(space.segments),
       "rss_after_open_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
       "index_mib": round((space._index.prefixes.nbytes + space._index.rows.nbytes) / 2**20, 1)}
def hashes(a, b):
    return [hashlib.sha256(f"text {i}".encode()).hexdigest() for i in range(a, b)]
if what == "contains":
    from embedflow.cache.segment import keys_of, prefixes_of
    seconds = found = 0
    for start in range(0, keys, 1_000_000):
        batch = hashes(start + keys // 10, min(start + 1_000_000, keys) + keys // 10)  # the last 10 %: absent
        query = prefixes_of(keys_of(batch))
        t = time.perf_counter()
        found += int(space.contains_prefixes(query).sum())
        seconds += time.perf_counter() - t
    out.update(contains_s=round(seconds, 2), found=found, queried=keys)
else:
    rng = np.random.default_rng(1); t = time.perf_counter(); served = 0
    for window in range(200):
        first = int(rng.integers(0, keys - 2048))
        vectors, found = space.get(hashes(first, first + 2048))
        served += int(found.sum())
    out.update(get_s_per_window=round((time.perf_counter() - t) / 200, 4), served=served)
out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
"""


def measure(folder: Path, keys: int, what: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(REPO), str(folder), str(keys), what],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def cmd_store(args) -> None:
    print("| keys | dim | segments | write s | open s | index MiB | RSS after open MiB | contains (all keys) s | "
          "get s / window of 2,048 | peak RSS MiB (contains / get) | disk MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for keys in args.keys:
        folder = Path(tempfile.mkdtemp(prefix="cache-bench-", dir=args.scratch))
        try:
            written = build_store(folder, keys, args.dim, args.segment_rows)
            disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
            contains, get = measure(folder, keys, "contains"), measure(folder, keys, "get")
            print(f"| {keys:,} | {args.dim} | {contains['segments']:,} | {written:.1f} | {contains['open_s']} | "
                  f"{contains['index_mib']} | {contains['rss_after_open_mib']} | {contains['contains_s']} | {get['get_s_per_window']} | {contains['peak_rss_mib']} / "
                  f"{get['peak_rss_mib']} | {disk:,.0f} |", flush=True)
        finally:
            shutil.rmtree(folder)


WORDS = ("Return the number of items in the container. Read a whole file into a string. Parse an ISO 8601 date. "
         "Compute the SHA-256 digest of some bytes. Raise ValueError when the argument is negative.").split()


def synthetic_corpus(path: Path, rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    texts = []
    with open(path, "w") as handle:
        for i in range(rows):
            words = rng.choice(WORDS, size=int(rng.integers(12, 60)))
            text = f"sdk.module{i % 97}.function_{i}: " + " ".join(words)
            texts.append(text)
            handle.write(json.dumps({"id": f"c{i}", "content": text}) + "\n")
    return texts


def cmd_plan(args) -> None:
    from embedflow.cache import VectorCache
    from embedflow.hashing import sha256_text
    from embedflow.identity import encoder_identity
    from embedflow.schema import defaults

    print("| corpus rows | cached | to encode | `embedflow plan --json` wall s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        folder = Path(tempfile.mkdtemp(prefix="plan-bench-", dir=args.scratch))
        try:
            texts = synthetic_corpus(folder / "chunks.jsonl", rows)
            spec = {**defaults(name="model"), "source": "bundled:all-MiniLM-L6-v2", "variant": None}
            space = VectorCache(folder / "cache").namespace(encoder_identity(spec))
            cached = [sha256_text(t) for i, t in enumerate(texts) if i % 100]  # 99 %
            for start in range(0, len(cached), 65536):
                part = cached[start : start + 65536]
                space.put(part, np.zeros((len(part), 8), np.float32), {"dim": 8})
            (folder / "config.yaml").write_text(json.dumps({
                "chunks": str(folder / "chunks.jsonl"), "models": {"minilm": {"source": "bundled:all-MiniLM-L6-v2"}},
                "cache": {"path": str(folder / "cache")}, "queries": None, "precisions": ["float32"]}))
            command = [sys.executable, "-c", "import resource, sys; from embedflow.cli import main; code = main();"
                       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)",
                       "--config", str(folder / "config.yaml"), "plan", "--json", "--no-save"]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
            wall = time.perf_counter() - started
            plan = json.loads(done.stdout)["models"]["minilm"]
            peak = int(done.stderr.strip().splitlines()[-1]) / 1024
            print(f"| {rows:,} | {plan['cached']:,} | {plan['to_encode']:,} | {wall:.1f} | {peak:,.0f} |", flush=True)
        finally:
            shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scratch", default=None, help="folder for the temporary stores (default: the system's)")
    commands = parser.add_subparsers(dest="command", required=True)
    store = commands.add_parser("store")
    store.add_argument("--keys", type=int, nargs="+", default=[1_000_000, 10_000_000])
    store.add_argument("--dim", type=int, default=8)
    store.add_argument("--segment-rows", type=int, default=2048, help="rows per segment (embed: window_rows)")
    store.set_defaults(run=cmd_store)
    plan = commands.add_parser("plan")
    plan.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    plan.set_defaults(run=cmd_plan)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
