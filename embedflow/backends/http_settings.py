"""A backend http model's settings, without any HTTP: what the planner, the params and the
encoder share (docs/http.md).

Plain Python: the Snakefile imports it while planning. The client is
``embedflow.backends.http``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from embedflow.errors import ConfigError

PROVIDER_URLS = {"openai": "https://api.openai.com/v1", "voyage": "https://api.voyageai.com/v1"}
# What changes the vectors an API returns; everything else in the block (limits, concurrency,
# timeout, retries, price, the key's variable) changes speed or bills, and reruns nothing.
VECTOR_KEYS = ("provider", "model", "base_url", "dimensions")
# Keys of a model spec that mean nothing to an API: refused (not ignored) on an http model.
LOCAL_ONLY_KEYS = ("revision", "adapter", "max_seq_length", "trust_remote_code")
# UTF-8 bytes per token for the estimates: BPE tokenizers average about 4 on English prose
# and about 3 on code, so 3 errs on the high side (requests a bit smaller, costs a bit higher).
BYTES_PER_TOKEN = 3


def is_http(spec: dict) -> bool:
    return spec.get("backend") == "http"


def base_url(http: dict) -> str:
    return (http.get("base_url") or PROVIDER_URLS[http["provider"]]).rstrip("/")


def vector_slice(http: dict) -> dict:
    """The part of the block that changes vectors, the base URL resolved (so that writing the
    provider's own URL out changes nothing)."""
    return {**{key: http.get(key) for key in VECTOR_KEYS}, "base_url": base_url(http)}


def source_label(http: dict) -> str:
    """What stands in a model's ``source`` for an http model (file metadata, provenance)."""
    return f"http:{http['provider']}/{http['model']}"


def check_http_model(key: str, spec: dict) -> None:
    """What the schema cannot say about a model spec (before defaults are relied on)."""
    if not is_http(spec):
        if spec.get("http") is not None:
            raise ConfigError(f"models.{key}: has http settings but backend {spec.get('backend', 'torch')}; "
                              "set backend: http, or remove the http block")
        return
    if spec.get("source") is not None:
        raise ConfigError(f"models.{key}: an http model is named by http.model; remove source "
                          f"({spec['source']!r})")
    for name in LOCAL_ONLY_KEYS:
        if spec.get(name):
            raise ConfigError(f"models.{key}: {name} has no meaning for an http model: the server decides")
    if spec.get("compute_precision", "float32") != "float32":
        raise ConfigError(f"models.{key}: compute_precision is the server's for an http model; "
                          "leave it at float32")


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN) if text else 0


def estimate_cost(tokens: int, spec: dict) -> float | None:
    """Estimated price of ``tokens`` tokens for a model spec; None without a price (or not http)."""
    if not is_http(spec) or spec["http"].get("price_per_million_tokens") is None:
        return None
    return tokens * spec["http"]["price_per_million_tokens"] / 1_000_000


def plan_cost(texts: Iterable[str], spec: dict, prompt: str | None = None) -> dict:
    """Estimated tokens and cost of sending ``texts`` (with ``prompt`` before each) to the API."""
    tokens = sum(estimate_tokens((prompt or "") + text) for text in texts)
    return {"tokens_estimated": tokens, "estimated_cost": estimate_cost(tokens, spec),
            "price_per_million_tokens": spec["http"].get("price_per_million_tokens") if is_http(spec) else None}
