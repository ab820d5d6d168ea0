"""The vector cache (embedflow.cache) under embed: what is encoded, what is reused, what is refused.

Module level, on the tiny random model and a few dozen chunks; the texts the model
receives are counted by wrapping the loaded encoder's ``encode``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import example_chunks, write_chunks
from embedflow import encoder as encoders
from embedflow.cache import CacheBusy, VectorCache, run_lock
from embedflow.cache.maintenance import cache_stats, prune, used_keys
from embedflow.cache.segment import open_segment
from embedflow.embed import EmbedSettings, embed_corpus
from embedflow.embeddings_file import read_all
from embedflow.identity import encoder_identity, identity_key
from embedflow.schema import defaults
from embedflow.vectors import row_cosines

WINDOW = 8


class Received(list):
    """The texts loaded encoders were asked to encode; ``loads``: how many models were loaded."""

    loads = 0


@pytest.fixture
def received(monkeypatch):
    texts = Received()
    real = encoders.load_encoder

    def load(*args, **kwargs):
        encoder = real(*args, **kwargs)
        encode = encoder.encode
        texts.loads += 1

        def counting(batch, prompt, batch_size):
            texts.extend(batch)
            return encode(batch, prompt, batch_size)

        encoder.encode = counting
        return encoder

    monkeypatch.setattr(encoders, "load_encoder", load)
    yield texts


def spec_of(model: Path, **changes) -> dict:
    return {**defaults(name="model"), "source": str(model), "variant": None, **changes}


def embed(tmp_path: Path, chunks: Path, model: Path, name: str, cache="cache", window=WINDOW, **changes):
    settings = EmbedSettings(model_key="tiny", model=spec_of(model, **changes), device="cpu", window_rows=window,
                             cache_path=None if cache is None else str(tmp_path / cache))
    return embed_corpus(chunks, tmp_path / f"{name}.parquet", settings)


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_chunks(tmp_path / "chunks.jsonl", example_chunks(24))


def min_cosine(a, b) -> float:
    cosines, valid = row_cosines(a, b)
    assert valid.all()
    return float(cosines.min())


def segments(tmp_path: Path, cache="cache") -> list[Path]:
    return sorted((tmp_path / cache).glob("*/segments/*.seg"))


def test_a_cached_row_equals_a_fresh_one_and_an_all_cached_rerun_loads_no_model(tmp_path, corpus, tiny_model,
                                                                               received):
    first = embed(tmp_path, corpus, tiny_model, "first")
    assert first.cache["texts_encoded"] == 24 and first.cache["rows_reused"] == 0 and received.loads == 1
    assert len(segments(tmp_path)) == 3  # one per window of 8
    again = embed(tmp_path, corpus, tiny_model, "again")
    assert received.loads == 1 and len(received) == 24  # no model loaded, nothing encoded
    assert again.cache["rows_reused"] == 24 and again.cache["texts_encoded"] == 0
    assert again.encoder.identity["model_loaded"] is False
    fresh = embed(tmp_path, corpus, tiny_model, "fresh", cache=None, window=5)  # other batches, no cache
    (meta_a, cached), (meta_f, new) = read_all(tmp_path / "again.parquet"), read_all(tmp_path / "fresh.parquet")
    assert meta_a == meta_f and cached.ids == new.ids and cached.hashes == new.hashes
    assert np.array_equal(cached.vectors, read_all(tmp_path / "first.parquet")[1].vectors)
    assert min_cosine(cached.vectors, new.vectors) >= 0.999999
    assert fresh.cache["texts_encoded"] == 24 and fresh.cache["path"] is None


def edit(chunks: list[dict]) -> tuple[list[dict], set[str]]:
    """3 texts changed, 1 chunk deleted, 2 added: the 5 texts a rerun must encode."""
    edited = [dict(chunk) for chunk in chunks]
    for chunk in edited[2:5]:
        chunk["content"] += " (edited)"
    del edited[10]
    edited += [{"id": "new-1", "content": "A chunk added today."}, {"id": "new-2", "content": "And another one."}]
    return edited, {c["content"] for c in edited[2:5]} | {"A chunk added today.", "And another one."}


def test_an_edit_encodes_exactly_the_changed_texts(tmp_path, corpus, tiny_model, received):
    embed(tmp_path, corpus, tiny_model, "before")
    chunks, changed = edit(example_chunks(24))
    write_chunks(corpus, chunks)
    received.clear()
    result = embed(tmp_path, corpus, tiny_model, "after")
    assert sorted(received) == sorted(changed)
    assert (result.cache["texts_encoded"], result.cache["rows_reused"], result.rows) == (5, 20, 25)
    after = read_all(tmp_path / "after.parquet")[1]
    assert after.ids == [str(c["id"]) for c in chunks]  # input order, as always


def test_a_document_prompt_change_encodes_everything_and_changing_it_back_nothing(tmp_path, corpus, tiny_model,
                                                                                 received):
    embed(tmp_path, corpus, tiny_model, "plain")
    prompted = embed(tmp_path, corpus, tiny_model, "prompted", document_prompt="passage: ")
    assert prompted.cache["texts_encoded"] == 24 and prompted.cache["rows_reused"] == 0
    back = embed(tmp_path, corpus, tiny_model, "back")
    assert back.cache["texts_encoded"] == 0 and len(received) == 48
    assert len({path.parent.parent.name for path in segments(tmp_path)}) == 2


def test_what_changes_a_vector_changes_the_key_and_nothing_else_does(tmp_path, tiny_model):
    base = spec_of(tiny_model)
    key = identity_key(encoder_identity(base))
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tiny_model.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(tiny_model)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    same = [spec_of(copy), {**base, "batch_size": 3}, {**base, "query_prompt": "q: "}]
    assert {identity_key(encoder_identity(spec)) for spec in same} == {key}  # a moved folder, speed, queries
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "x": 1}', 1))
    changed = [spec_of(copy)] + [{**base, name: value} for name, value in (
        ("compute_precision", "bfloat16"), ("document_prompt", "passage: "), ("max_seq_length", 16),
        ("normalize", False), ("truncate_dim", 8), ("backend", "onnx"), ("quantization", "int8"),
        ("http", {"provider": "openai", "model": "m", "base_url": None, "dimensions": 8}))]
    keys = {identity_key(encoder_identity(spec)) for spec in changed}
    assert len(keys) == len(changed) and key not in keys
    secret = {**base, "http": {"provider": "openai", "model": "m", "api_key_env": "K", "concurrency": 2}}
    assert encoder_identity(secret)["http"] == {"provider": "openai", "model": "m", "base_url": None,
                                                "dimensions": None}


def test_two_models_share_no_entry(tmp_path, corpus, tiny_model, received):
    embed(tmp_path, corpus, tiny_model, "float32")
    other = embed(tmp_path, corpus, tiny_model, "bfloat16", compute_precision="bfloat16")
    assert other.cache["texts_encoded"] == 24 and other.cache["rows_reused"] == 0
    stats = cache_stats(tmp_path / "cache")
    assert [s["entries"] for s in stats] == [24, 24] and len({s["identity_key"] for s in stats}) == 2


@pytest.mark.parametrize("damage", ["truncated", "a flipped byte"])
def test_a_damaged_segment_is_reported_ignored_and_its_rows_encoded_again(tmp_path, corpus, tiny_model, received,
                                                                          caplog, damage):
    embed(tmp_path, corpus, tiny_model, "first")
    middle = segments(tmp_path)[1]
    data = bytearray(middle.read_bytes())
    if damage == "truncated":
        middle.write_bytes(data[:-100])
    else:
        data[open_segment(middle)[0].vectors_offset + 10] ^= 0xFF  # found by the row's crc32 when read
        middle.write_bytes(bytes(data))
    received.clear()
    with caplog.at_level(logging.WARNING):
        result = embed(tmp_path, corpus, tiny_model, "second")
    texts = [c["content"] for c in example_chunks(24)]
    assert sorted(received) == sorted(texts[WINDOW : 2 * WINDOW])  # the middle window's rows only
    assert str(middle) in caplog.text and "ignored" in caplog.text
    assert min_cosine(read_all(tmp_path / "first.parquet")[1].vectors,
                      read_all(tmp_path / "second.parquet")[1].vectors) >= 0.999999
    stats = cache_stats(tmp_path / "cache", verify=True)[0]
    assert list(stats["bad_segments"]) == [str(middle)] and stats["segments"] == 4 - (damage == "truncated")


def config_for(tmp_path: Path, model: Path, **spec) -> dict:
    return {"chunks": str(tmp_path / "chunks.jsonl"), "text_field": "content", "on_bad_chunk": "fail",
            "test_mode": {"max_chunks": None, "sample": "head", "seed": 0}, "cache": {"path": str(tmp_path / "cache")},
            "models": {"tiny": {"source": str(model), **spec}}, "precisions": ["float32"]}


def test_prune_keeps_what_the_outputs_and_the_config_use_and_compacts(tmp_path, corpus, tiny_model, received,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    used_by_output = embed(tmp_path, corpus, tiny_model, "results/embeddings/embeddings_tiny_float32")
    Path("results/embeddings/embeddings_tiny_float32.parquet.provenance.json").write_text(
        json.dumps({"cache": {"identity_key": used_by_output.cache["identity_key"]}}))
    embed(tmp_path, corpus, tiny_model, "b", document_prompt="b: ")
    embed(tmp_path, corpus, tiny_model, "c", document_prompt="c: ")
    assert len(segments(tmp_path)) == 9
    config = config_for(tmp_path, tiny_model, document_prompt="c: ")  # the next run: prompt c
    keep = used_keys(config, "results/embeddings/embeddings_*_float32.parquet")
    with run_lock(cache):  # an embed job is running
        with pytest.raises(CacheBusy, match="a run is using it"):
            prune(cache, keep)
    report = prune(cache, keep)
    assert (report.removed_entries, report.kept_entries, report.segments_after) == (24, 48, 2)
    remaining = {s["identity"]["document_prompt"]: s for s in cache_stats(cache)}
    assert sorted(remaining, key=str) == sorted([None, "c: "], key=str)
    assert all(s["segments"] == 1 and s["entries"] == 24 for s in remaining.values())
    received.clear()
    again = embed(tmp_path, corpus, tiny_model, "c2", document_prompt="c: ")
    assert again.cache["rows_reused"] == 24 and received == []  # compacted entries serve as before
    older = prune(cache, {}, older_than=datetime(2000, 1, 1, tzinfo=UTC))
    assert older.removed_entries == 0  # everything was written after that date
    assert VectorCache(cache).keys() == sorted(s["identity_key"] for s in remaining.values())


def test_a_workflow_rerun_after_an_edit_encodes_the_edit_and_says_so(workflow, tiny_model):
    """Snakemake reruns embed after a chunk's edit; the job encodes that one text, reuses the
    others, and its provenance shows embedflow plan's prediction beside the outcome."""
    target = "results/embeddings/embeddings_tiny_float32.parquet"
    workflow.update_config(models={"tiny": {"source": str(tiny_model)}}, precisions=["float32"])
    workflow.snakemake("--", target)
    first = json.loads(workflow.path(f"{target}.provenance.json").read_text())["cache"]
    assert (first["texts_encoded"], first["rows_reused"]) == (12, 0)
    chunks_path = workflow.path("data/chunks.json")
    chunks = json.loads(chunks_path.read_text())
    chunks[3]["content"] += " (edited)"
    chunks_path.write_text(json.dumps(chunks))
    planned = workflow.embedflow("plan", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["models"]["tiny"]["to_encode"] == 1
    done = workflow.snakemake("--", target)
    assert "rule embed:" in done.stdout + done.stderr
    record = json.loads(workflow.path(f"{target}.provenance.json").read_text())
    assert (record["cache"]["texts_encoded"], record["cache"]["rows_reused"]) == (1, 11)
    assert record["plan"]["agree"] is True and record["plan"]["predicted"]["to_encode"] == 1
