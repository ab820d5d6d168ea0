#!/usr/bin/env python3
"""A corpus edit at 100,000 chunks: the whole workflow, a full run against the rerun after a 1 % edit.

    python benchmarks/edit_rerun.py [--rows 100000] [--edit 0.01] [--threads 2] [--workdir DIR]
                                    [--database embedded|standing] [--server-setting NAME=VALUE ...]

In a copy of the workflow (one model, the bundled MiniLM on CPU, float32, no
queries, the embedded database), on a corpus of ``rows`` synthetic variations
of real SDK docstrings (the example's CPython docstrings, each chunk a slice of
``--words`` of one's words, 12 to 64 by default, behind a name of its own; the
bundled MiniLM encodes about 30 such chunks a second on 2 CPU cores, so
``--words 4-16``, one-line summaries, keeps a 100 k full run near 20 minutes):

1. ``full``: ``snakemake --cores T --resources gpu=1`` from nothing;
2. ``spread``: ``edit`` of the corpus touched at random places (80 % of the
   touched chunks get a new text, 20 % are new chunks, and as many old chunks as
   new ones are deleted, so exactly ``edit`` of the corpus is new text), then
   ``embedflow plan --json`` and the same command again;
3. ``clustered``: an edit of the same size, in one run of adjacent chunks (a
   page of the docs rewritten), then plan and the same command again.

``--database embedded`` (the default) is the example's database: each job
starts the embedded server on ``results/pgdata`` and stops it. ``standing`` is
a live search service's: one server, started here before the first run and
stopped after the last, which the jobs reach through ``database.dsn_env``, so
no job starts, stops or checkpoints it. ``--server-setting`` (standing only,
repeatable) sets a server parameter first, as a serving database's operator
would (e.g. ``shared_buffers=1GB``, so that the table and its index stay in
the server's buffers between runs).

For each run: texts the model received (provenance), the model-seconds,
the wall time of each stage (Snakemake's own start and end times in
``.snakemake/metadata``: first start to last end of the stage's jobs), and the
whole command. Goals (issue 13): texts encoded = ``edit`` of the corpus, embed
work ≤ 2 % and load + index ≤ 10 % of the full run's. Prints Markdown for
docs/benchmarks.md. Standard library and PyYAML; no farm tool.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import _pg
from _common import REPO, copy_workflow, facts_markdown, machine_facts, read_jsonl, real_corpus, table, write_jsonl

MODEL = "minilm"
DSN_ENV = "EMBEDFLOW_BENCH_DSN"  # --database standing: the variable database.dsn_env names
STAGES = {  # stage: the rules whose jobs make it up
    "embed": ("shard_plan", "embed", "gather"),
    "verify": ("measure", "probe", "verify"),
    "load": ("load",),
    "index": ("index",),
}


def corpus(workdir: Path, rows: int, span: tuple[int, int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docstrings = [chunk["content"].split() for chunk in read_jsonl(real_corpus(workdir))]
    chunks = []
    for i in range(rows):
        words = docstrings[i % len(docstrings)]
        size = rng.randint(*span)
        start = rng.randint(0, max(0, len(words) - size))
        chunks.append({"id": f"sdk.m{i % 97}.f{i}", "content": f"sdk.m{i % 97}.f{i}: " + " ".join(words[start:start + size])})
    return chunks


def edited(chunks: list[dict], share: float, clustered: bool, seed: int) -> tuple[list[dict], dict]:
    """The corpus with ``share`` of its rows new text: 80 % edits, 20 % new chunks (as many deleted)."""
    rng = random.Random(seed)
    touched = round(len(chunks) * share)
    added = touched // 5
    changed = touched - added
    if clustered:
        start = rng.randrange(len(chunks) - touched - added)
        places = list(range(start, start + changed + added))
    else:
        places = rng.sample(range(len(chunks)), changed + added)
    edit_at, delete_at = set(places[:changed]), set(places[changed:])
    out = []
    for i, chunk in enumerate(chunks):
        if i in delete_at:
            continue
        if i in edit_at:
            chunk = {**chunk, "content": chunk["content"] + f" (revised {seed})"}
        out.append(chunk)
    for j in range(added):  # new chunks next to the deleted ones' places
        at = rng.randrange(len(out) + 1) if not clustered else min(len(out), min(delete_at))
        out.insert(at, {"id": f"new.{seed}.{j}", "content": f"new.{seed}.{j}: a new section of the docs, {j}"})
    return out, {"changed": changed, "added": added, "deleted": len(delete_at)}


def stage_seconds(root: Path, since: float) -> dict[str, float]:
    """Per stage: last end - first start of its jobs that ran after ``since`` (Snakemake's metadata)."""
    spans: dict[str, list[float]] = {}
    for record in (root / ".snakemake/metadata").iterdir():
        meta = json.loads(record.read_text())
        if (meta.get("starttime") or 0) < since:
            continue
        for stage, rules in STAGES.items():
            if meta["rule"] in rules:
                spans.setdefault(stage, []).extend([meta["starttime"], meta["endtime"]])
    return {stage: (max(s) - min(s)) if s else 0.0 for stage, s in ((stage, spans.get(stage, [])) for stage in STAGES)}


def run_workflow(root: Path, threads: int) -> dict:
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(threads), "--resources", "gpu=1"],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.time() - started
    if done.returncode:
        sys.exit(f"snakemake failed in {root}:\n{done.stderr[-3000:]}")
    prov = json.loads((root / f"results/embeddings/embeddings_{MODEL}_float32.parquet.provenance.json").read_text())
    loaded = json.loads((root / f"results/db/{MODEL}_float32.loaded.json").read_text())
    this_run = prov["since_shard_plan"]  # the parts this run made (the others kept)
    return {"wall": wall, "stages": stage_seconds(root, started), "texts": this_run["texts_encoded"],
            "model_s": this_run["model_seconds"], "shards": len(prov["shards"]), "shards_encoding": this_run["shards_run"],
            "load": {key: loaded.get(key) for key in ("strategy", "inserted", "updated", "deleted", "unchanged",
                                                     "records_index_used")}}


def plan(root: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "embedflow.cli", "plan", "--json", "--no-save"], cwd=root,
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    return json.loads(done.stdout), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--edit", type=float, default=0.01, help="share of the corpus given new text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--words", default="12-64", help="words of a docstring per chunk, MIN-MAX")
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary folder, removed)")
    parser.add_argument("--database", choices=("embedded", "standing"), default="embedded",
                        help="embedded: each job starts and stops the embedded server; standing: one server "
                             "for all runs, reached by DSN")
    parser.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="with --database standing: a server parameter set by ALTER SYSTEM before the runs")
    args = parser.parse_args()
    if any("=" not in item for item in args.server_setting):
        parser.error("--server-setting takes NAME=VALUE, e.g. shared_buffers=1GB")
    server_settings = dict(item.split("=", 1) for item in args.server_setting)
    if server_settings and args.database != "standing":
        parser.error("--server-setting needs --database standing (the embedded jobs use the example's server)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edit-rerun-"))
    root = workdir / "workflow"
    shutil.rmtree(root, ignore_errors=True)
    copy_workflow(root)
    chunks = corpus(workdir, args.rows, tuple(int(n) for n in args.words.split("-")))
    (root / "data").mkdir()
    chunks_path = write_jsonl(root / "data/chunks.jsonl", chunks)
    config_path = root / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.update(chunks=str(chunks_path), queries=None, precisions=["float32"],
                  models={MODEL: {"source": "bundled:all-MiniLM-L6-v2"}})
    config["embed"]["threads"] = args.threads
    with contextlib.ExitStack() as standing:
        if args.database == "standing":
            os.environ[DSN_ENV] = standing.enter_context(_pg.server(workdir, server_settings))[1]
            config["database"]["dsn_env"] = DSN_ENV
        config_path.write_text(yaml.safe_dump(config))
        runs = {"full": run_workflow(root, args.threads)}
        edits, plans = {}, {}
        for name, clustered, seed in (("spread", False, 1), ("clustered", True, 2)):
            chunks, edits[name] = edited(chunks, args.edit, clustered, seed)
            write_jsonl(chunks_path, chunks)
            plans[name] = plan(root)
            runs[name] = run_workflow(root, args.threads)

    full = runs["full"]
    rows = []
    for name, run in runs.items():
        stages = run["stages"]
        li, full_li = stages["load"] + stages["index"], full["stages"]["load"] + full["stages"]["index"]
        rows.append([name, f"{run['texts']:,}", f"{run['shards_encoding']}/{run['shards']}", f"{run['model_s']:.1f}",
                     f"{stages['embed']:.1f} ({stages['embed'] / full['stages']['embed']:.1%})",
                     f"{stages['verify']:.1f}", f"{stages['load']:.1f}", f"{stages['index']:.1f}",
                     f"{li / full_li:.1%}", f"{run['wall']:.1f} ({run['wall'] / full['wall']:.1%})",
                     "{strategy}: +{inserted} ~{updated} -{deleted}".format(**run["load"])
                     + (" (records index)" if run["load"]["records_index_used"] else "")])
    print(f"`python benchmarks/edit_rerun.py --rows {args.rows} --edit {args.edit} --threads {args.threads} "
          f"--words {args.words} --database {args.database}"
          + "".join(f" --server-setting {item}" for item in args.server_setting) + "`\n")
    print(facts_markdown(machine_facts()) + "\n")
    print(table(["run", "texts encoded", "shard jobs run", "model-s", "embed s (of full)", "verify s", "load s",
                 "index s", "load+index of full", "whole command s (of full)", "load"], rows))
    print()
    for name, (predicted, seconds) in plans.items():
        model, tab = predicted["models"][MODEL], predicted["tables"][f"{MODEL}_float32"]
        print(f"- {name}: edit {edits[name]}; `embedflow plan --json` in {seconds:.1f} s predicted "
              f"{model['to_encode']:,} to encode, table {json.dumps({k: tab.get(k) for k in ('strategy', 'insert', 'update', 'delete', 'keep', 'index')})}")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
