"""Backend http against a real server on 127.0.0.1 (tests/embedding_server.py, uvicorn):
the same vectors as the local model, retries on 429 and 5xx, refusals that name the variable,
the model or the chunk and never the key, Voyage's input types."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import numpy as np
import pytest

from conftest import example_chunks, http_model_spec, write_chunks
from embedflow.backends.http import backoff, request_slices, retry_after
from embedflow.backends.http_settings import estimate_tokens, plan_cost
from embedflow.encoder import load_encoder
from embedflow.errors import ConfigError, InputError, UserError
from embedflow.schema import defaults

KEY_ENV = "EMBEDFLOW_TEST_KEY"
TEXTS = [chunk["content"] for chunk in example_chunks(20)]


@pytest.fixture
def server(embedding_server, monkeypatch):
    """The session's server with no fault and a zero count; the right key in KEY_ENV."""
    embedding_server.reset()
    monkeypatch.setenv(KEY_ENV, embedding_server.key)
    return embedding_server


def encoder_for(server, **http):
    return load_encoder("served", http_model_spec(server, key_env=KEY_ENV, **http), "cpu", False)


def test_vectors_through_http_equal_the_local_model_s(server):
    local = load_encoder("minilm", {**defaults(None, "model"), "source": "bundled:all-MiniLM-L6-v2", "variant": None},
                         "cpu", False)
    remote = encoder_for(server, model="minilm", max_inputs_per_request=3, concurrency=3, price_per_million_tokens=0.5)
    expected = local.encode(TEXTS, None, 8)
    got = remote.encode(TEXTS, None, 8)
    assert got.dtype == np.float32 and got.shape == expected.shape == (20, 384)
    cosines = (got * expected).sum(1)  # both unit length: the server answers in reverse order
    assert cosines.min() >= 0.99999, cosines.min()
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    stats = server.stats()
    assert stats["requests"] == math.ceil(20 / 3) and max(entry["inputs"] for entry in stats["log"]) == 3
    usage = remote.usage_record()
    assert usage["requests"] == stats["requests"] and usage["retries"] == 0
    assert usage["served_models"] == ["minilm-served"] and remote.identity["served_models"] == ["minilm-served"]
    tokens = sum(len(ids) for ids in local.model.tokenizer(TEXTS)["input_ids"])
    assert usage["tokens_billed"] == tokens and usage["estimated_cost"] == pytest.approx(tokens * 0.5 / 1e6)
    assert usage["tokens_estimated"] == sum(estimate_tokens(text) for text in TEXTS)
    assert 0.5 < usage["tokens_estimated"] / tokens < 2  # an estimate (WordPiece counts differ from BPE's)


def test_two_429s_then_success_retries_and_returns_everything(server, caplog):
    baseline = encoder_for(server, max_inputs_per_request=3, concurrency=1).encode(TEXTS[:6], None, 8)
    server.reset()
    server.faults(status=429, count=2, retry_after="0")
    encoder = encoder_for(server, max_inputs_per_request=3, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="embedflow"):
        vectors = encoder.encode(TEXTS[:6], None, 8)
    np.testing.assert_array_equal(vectors, baseline)
    assert server.stats()["requests"] == 2 + 2 and encoder.usage_record()["retries"] == 2
    retried = [r.getMessage() for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert len(retried) == 2 and "retry 1 of 5 in 0.0 s" in retried[0] and "retry 2 of 5" in retried[1]


def test_a_500_storm_fails_after_the_configured_retries(server):
    server.faults(status=500, after=1, retry_after="0")  # the first request is answered, then only 500s
    encoder = encoder_for(server, max_inputs_per_request=2, concurrency=1, retries=2)
    with pytest.raises(UserError) as failure:
        encoder.encode(TEXTS[:6], None, 8)
    message = str(failure.value)
    assert "failed 3 time(s), last with HTTP 500" in message and "http.retries: 2" in message
    assert message.startswith("model served: ")
    assert server.stats()["requests"] == 1 + 3  # no request after the one that failed for good


def test_after_a_500_storm_the_rerun_requests_only_the_windows_not_received(server, tmp_path):
    from embedflow.embed import EmbedSettings, embed_corpus

    path = write_chunks(tmp_path / "chunks.json", example_chunks(12))
    spec = http_model_spec(server, key_env=KEY_ENV, max_inputs_per_request=2, concurrency=1, retries=1)
    settings = EmbedSettings("served", spec, window_rows=4, cache_path=str(tmp_path / "cache"))
    server.faults(status=500, after=1 + 4, retry_after="0")  # the dimension, windows 1 and 2 (2 requests each)
    with pytest.raises(UserError, match="failed 2 time"):
        embed_corpus(path, tmp_path / "out.parquet", settings)
    assert server.stats()["requests"] == 1 + 4 + 2 and not (tmp_path / "out.parquet").exists()
    server.reset()  # the storm is over
    result = embed_corpus(path, tmp_path / "out.parquet", settings)
    assert server.stats()["requests"] == 2  # window 3 only: the cache kept the 8 chunks received
    assert (result.rows, result.cache["rows_reused"], result.cache["texts_encoded"]) == (12, 8, 4)
    assert result.encoder.usage_record()["requests"] == 2


def test_a_wrong_key_names_its_variable_and_never_the_key(server, monkeypatch, caplog):
    wrong = "sk-wrong-" + "0123456789abcdef" * 2
    monkeypatch.setenv(KEY_ENV, wrong)
    encoder = encoder_for(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(UserError) as failure:
        encoder.encode(TEXTS[:2], None, 8)
    message = str(failure.value)
    assert f"refused the API key in ${KEY_ENV} (HTTP 401)" in message
    assert server.stats()["log"][0]["status"] == 401  # and the server echoed the key it got
    for secret in (wrong, server.key):
        assert secret not in message and secret not in caplog.text and secret not in repr(encoder.identity)


def test_a_missing_key_variable_fails_before_any_request(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=f"http.api_key_env names {KEY_ENV}, which is not set"):
        encoder_for(server)
    assert server.stats()["requests"] == 0


def test_an_unknown_model_is_named(server):
    with pytest.raises(UserError, match="HTTP 404 for model 'no-such-model'.*does not exist"):
        encoder_for(server, model="no-such-model").encode(TEXTS[:2], None, 8)


def test_a_text_the_api_refuses_is_named_by_its_chunk_id(server, tmp_path):
    from embedflow.embed import EmbedSettings, embed_corpus

    chunks = example_chunks(8)
    chunks[5]["content"] = "a very long chunk " * 200  # over the server's 512 tokens a text
    path = write_chunks(tmp_path / "chunks.json", chunks)
    spec = http_model_spec(server, key_env=KEY_ENV, max_inputs_per_request=8)
    with pytest.raises(InputError) as failure:
        embed_corpus(path, tmp_path / "out.parquet", EmbedSettings("served", spec, cache_path=None))
    assert str(failure.value).startswith(f"{path}: chunk id {chunks[5]['id']!r}: ")
    assert "HTTP 400" in str(failure.value) and "longer than 512 tokens" in str(failure.value)
    # The dimension asked (1 text: the file's is known before the first window), then 8
    # refused, and halves: [0:4] answered, [4:8] refused, [4:6] refused, [4:5] answered, [5:6] refused
    assert [entry["inputs"] for entry in server.stats()["log"]] == [1, 8, 4, 4, 2, 1, 1]
    assert not (tmp_path / "out.parquet").exists()


def test_voyage_gets_the_input_type_and_output_dimension(server):
    encoder = encoder_for(server, provider="voyage", dimensions=16)
    documents = encoder.encode(TEXTS[:3], None, 8)
    queries = encoder.encode(["how do I read a file"], "query: ", 8, input_type="query")
    assert documents.shape == (3, 16) and queries.shape == (1, 16) and encoder.dim == 16
    log = server.stats()["log"]
    assert [(entry["route"], entry["input_type"], entry["dimensions"]) for entry in log] == [
        ("voyage", "document", 16), ("voyage", "query", 16)]
    assert log[1]["texts"] == ["query: how do I read a file"]  # the prompt goes before the text, as locally


def test_the_dimension_of_a_model_without_dimensions_is_asked_once(server):
    encoder = encoder_for(server)
    assert encoder.dim == 32 and encoder.dim == 32
    assert server.stats()["requests"] == 1


def test_requests_are_cut_by_inputs_and_estimated_tokens():
    texts = ["x" * 30] * 7  # 10 estimated tokens each
    assert list(request_slices(texts, 3, 1000)) == [(0, 3), (3, 6), (6, 7)]
    assert list(request_slices(texts, 100, 25)) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert list(request_slices(["x" * 300, "y"], 100, 25)) == [(0, 1), (1, 2)]  # too long alone goes alone


def test_backoff_grows_with_jitter_and_retry_after_is_read():
    for attempt, step in ((0, 0.5), (3, 4.0), (20, 30.0)):
        delays = [backoff(attempt) for _ in range(50)]
        assert step / 2 <= min(delays) and max(delays) <= step and len(set(delays)) > 1
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("0") == 0 and retry_after("2.5") == 2.5 and retry_after("99999") == 300
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(date) <= 30


def test_plan_cost_estimates_tokens_and_price():
    spec = {"backend": "http", "http": {"price_per_million_tokens": 0.18}}
    cost = plan_cost(["abc" * 100, "x"], spec, prompt="q: ")
    assert cost["tokens_estimated"] == 101 + 2 and cost["estimated_cost"] == pytest.approx(103 * 0.18 / 1e6)
    assert plan_cost(["abc"], {"backend": "http", "http": {"price_per_million_tokens": None}})["estimated_cost"] is None
    assert json.dumps(cost)
