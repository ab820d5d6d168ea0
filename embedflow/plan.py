"""``embedflow plan``: what a run will encode and about how long it will take, before it runs.

Per model of the config: the chunks a run embeds (preflight's rules and test
mode, from ``embedflow.chunks``), how many of them the vector cache has under
the model's identity, the distinct texts left to encode, their tokens (the
model's ``tokenizer.json``, by the ``tokenizers`` library), and an estimate of
the encode time from the throughput embed measured for that encoder on a kind
of device. No torch, no model, no GPU, no database.

Per table: ``embedflow.table_plan.plan_servable_tables`` (the load side's plan), given each
model's identity key and the chunks the model part found rejected.

The plan is saved to ``results/plan.json``; embed's provenance shows it beside
what the job did (``plan.predicted`` / ``plan.outcome``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from embedflow.atomic import write_json
from embedflow.backends.http_settings import is_http, plan_cost
from embedflow.cache.segment import KEY_BYTES, prefixes_of
from embedflow.cache.runs import throughput_records
from embedflow.cache.store import VectorCache
from embedflow.chunks import iter_chunks, select_positions, validate_chunks
from embedflow.config import model_output_slice
from embedflow.hashing import sha256_text
from embedflow.identity import encoder_identity, identity_key, is_resolved
from embedflow.paths import PLAN
from embedflow.variants import keys_by_way, resolve

log = logging.getLogger(__name__)

UNKNOWN = "unknown: no run measured yet"
# Texts to encode whose tokens are counted; more are estimated from a sample this big.
TOKEN_SAMPLE = 20_000


# --- the corpus ----------------------------------------------------------------------


@dataclass
class CorpusKeys:
    path: str
    sha256: str
    chunks: int  # accepted
    rejected: int
    skip: frozenset[int]
    positions: list[int] | None  # the selection (None: every accepted chunk)
    keys: np.ndarray  # (selected, 32) uint8: sha256 of each selected chunk's text, in order


def corpus_keys(config: dict) -> CorpusKeys:
    """The chunks a run embeds, by text sha256: preflight's checks (``on_bad_chunk``), then
    the test-mode selection, exactly as rule embed selects them."""
    path, field = config["chunks"], config["text_field"]
    summary = validate_chunks(path, field, on_bad_chunk=config["on_bad_chunk"])
    skip = frozenset(record["position"] for record in summary.rejected)
    test_mode = config["test_mode"]
    positions = select_positions(summary.count, test_mode["max_chunks"], test_mode["sample"], test_mode["seed"], skip)
    digests = bytearray()
    for chunk in iter_chunks(path, field, positions, skip):
        digests += bytes.fromhex(sha256_text(chunk.text))
    keys = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(-1, KEY_BYTES)
    return CorpusKeys(str(path), summary.sha256, summary.count, len(summary.rejected), skip, positions, keys)


# --- estimates ------------------------------------------------------------------------


def estimate(records: list[dict], key: str, model: str, texts: int, tokens: int | None,
             device_kind: str | None) -> dict | str:
    """Seconds to encode, at the rate pooled over the embed jobs of this encoder (else of this
    model key) on ``device_kind`` (None: the kind of the newest job): their tokens (or texts)
    over their model-seconds, so that a big job weighs more than a job of five texts; plus
    the newest job's model load time."""
    if not texts:
        return {"seconds": 0.0, "basis": "nothing to encode"}
    mine = [r for r in records if r["identity_key"] == key] or [r for r in records if r.get("model") == model]
    if mine and device_kind is None:
        device_kind = max(mine, key=lambda r: r["finished"]).get("device_kind")
    mine = [r for r in mine if r.get("device_kind") == device_kind]
    if not mine:
        return UNKNOWN + (f" on {device_kind}" if device_kind else "")
    seconds_measured = sum(r["model_seconds"] for r in mine)
    measured_tokens = sum(r.get("tokens_encoded") or 0 for r in mine)
    if tokens is not None and measured_tokens and all(r.get("tokens_encoded") for r in mine):
        rate = measured_tokens / seconds_measured
        seconds, shown = tokens / rate, f"{rate:,.0f} tokens/s"
    else:
        rate = sum(r["texts_encoded"] for r in mine) / seconds_measured
        seconds, shown = texts / rate, f"{rate:,.1f} texts/s"
    newest = max(mine, key=lambda r: r["finished"])
    seconds += newest.get("load_seconds") or 0.0
    basis = (f"{shown} over {len(mine)} embed job(s) on {device_kind}, the newest at {newest['finished'][:16]}Z, "
             f"+ {newest.get('load_seconds') or 0:.0f} s to load the model")
    if newest["identity_key"] != key:
        basis += "; measured by another identity of this model (prompt, precision or files differ)"
    return {"seconds": round(seconds, 1), "basis": basis, "device_kind": device_kind}


# --- the model part --------------------------------------------------------------------


def embedded_models(config: dict) -> tuple[list[str], dict[str, str]]:
    """Keys rule embed encodes (models, trained heads), and the variants derived without encoding."""
    ways = keys_by_way(config["models"])
    derived = {key: config["models"][key]["base"] for way in ("truncate_dim", "pca") for key in ways[way]}
    return ways[None] + ways["projection_head"], derived


def plan_model(config: dict, key: str, corpus: CorpusKeys, cache: VectorCache | None, records: list[dict],
               tokens: bool = True, device_kind: str | None = None) -> dict:
    spec = model_output_slice(resolve(config["models"], key))
    identity = encoder_identity(spec)
    rows = len(corpus.keys)
    prefixes = prefixes_of(corpus.keys)
    entry = {"chunks": rows, "identity_key": None, "cached": 0}
    if cache is not None and is_resolved(identity):
        entry["identity_key"] = identity_key(identity)
        namespace = cache.open_key(entry["identity_key"])
        found = namespace.contains_prefixes(prefixes)
        entry["cached"] = int(found.sum())
        if namespace.bad:
            entry["bad_segments"] = sorted(namespace.bad)
        # embed encodes each distinct missing text once
        _, first = np.unique(prefixes[~found], return_index=True)
        encode_rows = np.flatnonzero(~found)[first]
    elif cache is not None:
        entry["note"] = "the model's files are not on this machine yet: every chunk counts as to encode"
        encode_rows = np.arange(rows)
    else:
        encode_rows = np.arange(rows)  # no cache: every chunk, repeated texts too
    entry["to_encode"] = int(len(encode_rows))
    entry["tokens"] = None
    if tokens:
        # Tokenizing is the plan's slowest part: beyond TOKEN_SAMPLE texts, a spread sample stands for them.
        sample = encode_rows[np.linspace(0, len(encode_rows) - 1, TOKEN_SAMPLE).astype(np.int64)] \
            if len(encode_rows) > TOKEN_SAMPLE else encode_rows
        counted = _count_tokens(config, spec, corpus, sample) if len(sample) else 0
        if counted is not None:
            entry["tokens"] = round(counted * len(encode_rows) / len(sample)) if len(sample) else 0
            entry["tokens_estimated_from"] = int(len(sample)) if len(sample) < len(encode_rows) else None
    entry["estimate"] = estimate(records, entry["identity_key"], key, entry["to_encode"], entry["tokens"], device_kind)
    if is_http(spec):  # an API bills what it is sent: its tokens (estimated) and their price
        entry["http"] = _http_cost(config, resolve(config["models"], key), corpus, encode_rows)
    return entry


def _http_cost(config: dict, spec: dict, corpus: CorpusKeys, rows: np.ndarray) -> dict:
    wanted = np.zeros(len(corpus.keys), dtype=bool)
    wanted[rows] = True
    chunks = iter_chunks(corpus.path, config["text_field"], corpus.positions, corpus.skip)
    texts = (chunk.text for ordinal, chunk in enumerate(chunks) if wanted[ordinal])
    return plan_cost(texts, spec, spec.get("document_prompt"))


def _count_tokens(config: dict, spec: dict, corpus: CorpusKeys, rows: np.ndarray) -> int | None:
    from embedflow.tokens import token_counter

    counter = token_counter(spec)
    if counter is None:
        return None
    wanted = np.zeros(len(corpus.keys), dtype=bool)
    wanted[rows] = True
    texts, total = [], 0
    chunks = iter_chunks(corpus.path, config["text_field"], corpus.positions, corpus.skip)
    for ordinal, chunk in enumerate(chunks):
        if wanted[ordinal]:
            texts.append(chunk.text)
            if len(texts) == 8192:
                total, texts = total + counter.count(texts), []
    return total + counter.count(texts)


def table_part(config: dict, models: dict, corpus: CorpusKeys) -> dict | None:
    """The load side's plan per table (embedflow.table_plan)."""
    from embedflow.table_plan import plan_servable_tables
    from embedflow.tables import table_name

    identities = {key: entry.get("identity_key") for key, entry in models.items()}
    plans = plan_servable_tables(config, identities, skip=corpus.skip)
    return {table_name(config["database"]["table"], plan["model"], plan["precision"]): plan for plan in plans}


def make_plan(config: dict, tokens: bool = True, device_kind: str | None = None, tables: bool = True) -> dict:
    started = time.perf_counter()
    corpus = corpus_keys(config)
    cache_path = config["cache"]["path"]
    cache = VectorCache(cache_path) if cache_path else None
    records = throughput_records(cache_path)
    encoded, derived = embedded_models(config)
    models = {key: plan_model(config, key, corpus, cache, records, tokens, device_kind) for key in encoded}
    for key, base in derived.items():
        models[key] = {"derived_from": base, "to_encode": 0, "note": f"derived from {base}'s vectors: nothing to encode"}
    plan = {
        "planned_at": datetime.now(UTC).isoformat(),
        "corpus": {"path": corpus.path, "sha256": corpus.sha256, "chunks": corpus.chunks,
                   "rejected": corpus.rejected, "selected": len(corpus.keys)},
        "cache": cache_path,
        "models": models,
    }
    plan["tables"] = table_part(config, models, corpus) if tables else None
    plan["seconds"] = round(time.perf_counter() - started, 3)
    return plan


def save_plan(plan: dict, path: str | Path = PLAN) -> Path:
    return write_json(path, plan)


# --- for people --------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def describe(plan: dict) -> str:
    corpus = plan["corpus"]
    lines = [f"corpus {corpus['path']}: {corpus['chunks']:,} chunks accepted, {corpus['rejected']:,} rejected, "
             f"{corpus['selected']:,} embedded by a run"]
    lines.append(f"vector cache: {plan['cache'] or 'none (cache.path: null)'}")
    for key, entry in plan["models"].items():
        if "derived_from" in entry:
            lines.append(f"model {key}: {entry['note']}")
            continue
        tokens = f" ({entry['tokens']:,} tokens)" if entry.get("tokens") is not None else ""
        if entry.get("tokens_estimated_from"):
            tokens = f" (about {entry['tokens']:,} tokens, from a sample of {entry['tokens_estimated_from']:,})"
        found = entry["estimate"]
        when = found if isinstance(found, str) else f"about {duration(found['seconds'])} ({found['basis']})"
        lines.append(f"model {key}: {entry['chunks']:,} chunks, {entry['cached']:,} cached, "
                     f"{entry['to_encode']:,} to encode{tokens}; encode time: {when}")
        if entry.get("http"):
            lines.append(f"  {http_cost_line(entry['http'])}")
        for note in filter(None, [entry.get("note")] + [f"bad segment ignored: {p}" for p in entry.get("bad_segments", [])]):
            lines.append(f"  {note}")
    if plan.get("tables") is None:
        lines.append("tables: no table plan here (embedflow.table_plan is not installed)")
    else:
        for name, table in plan["tables"].items():
            lines.append(f"table {name}: " + ", ".join(f"{k} {v}" for k, v in table.items()))
    return "\n".join(lines)


def http_cost_line(cost: dict) -> str:
    price = cost["price_per_million_tokens"]
    if price is None:
        return f"API: about {cost['tokens_estimated']:,} tokens to send (no http.price_per_million_tokens: no cost)"
    return (f"API: about {cost['tokens_estimated']:,} tokens to send, estimated cost {cost['estimated_cost']:,.4f} "
            f"at {price} per million tokens")


def run_plan(config: dict, as_json: bool, tokens: bool = True, device_kind: str | None = None,
             save: bool = True) -> str:
    plan = make_plan(config, tokens, device_kind)
    if save:
        save_plan(plan)
    return json.dumps(plan, indent=2, sort_keys=True) if as_json else describe(plan)
