"""Backend ``http``: an embeddings API as an encoder (docs/http.md).

Two request schemas: ``openai`` (``POST <base_url>/embeddings`` with ``input``,
``model``, ``dimensions``, ``encoding_format: float``; spoken by OpenAI,
Mistral, vLLM, TEI, Infinity, Ollama) and ``voyage`` (the same route with
``input_type`` document | query and ``output_dimension``). Texts are split into
requests by ``max_inputs_per_request`` and an estimate of their tokens, sent
``concurrency`` at a time, and put back in input order from each response's
``index``. A request that got 429, 5xx, a timeout or a dropped connection is
retried with exponential backoff and jitter (``Retry-After`` honoured); a 4xx
that a retry cannot fix stops the job with a message naming the variable, the
model or the text, never the key. The key is read from the variable that
``api_key_env`` names, sent in the ``Authorization`` header only, and registered
with ``provenance.redact`` so that no log line or record can carry it.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from embedflow.backends.http_settings import base_url, estimate_cost, estimate_tokens, source_label
from embedflow.errors import ConfigError, TextRefused, UserError
from embedflow.projection import Projection, for_variant
from embedflow.provenance import REDACTED, register_secret
from embedflow.vectors import l2_normalize

log = logging.getLogger(__name__)
# httpx2 logs every request at INFO: a corpus would fill the job's log with them.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

INPUT_TYPES = ("document", "query")
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
# 400, 413 and 422 refuse what was sent: a request of several texts is split to find the one.
REFUSED_INPUT_STATUSES = frozenset({400, 413, 422})
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 300.0
MESSAGE_CHARS = 300


@dataclass
class Usage:
    """What the API was asked and billed, for provenance (one encoder, every call)."""

    requests: int = 0  # every HTTP request sent, retries and refused ones included
    retries: int = 0
    texts: int = 0
    tokens_estimated: int = 0
    tokens_billed: int = 0
    responses_without_usage: int = 0
    served_models: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, spec: dict) -> dict:
        http = spec["http"]
        return {
            "provider": http["provider"],
            "model": http["model"],
            "served_models": sorted(self.served_models),
            "requests": self.requests,
            "retries": self.retries,
            "texts": self.texts,
            "tokens_estimated": self.tokens_estimated,
            "tokens_billed": self.tokens_billed,
            "responses_without_usage": self.responses_without_usage,
            "price_per_million_tokens": http.get("price_per_million_tokens"),
            "estimated_cost": estimate_cost(self.tokens_billed, spec),
        }


class _Refused(Exception):
    """A 400/413/422 for what a request held (handled by splitting the request)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HttpEncoder:
    """Encodes through an embeddings API; the same face as ``encoder.Encoder``."""

    device = "http"
    compute_precision = "float32"  # what the API returns; its own precision is the server's
    tf32 = False
    max_seq_length = None  # the server's limit
    truncated_texts = 0  # an API does not say

    def __init__(self, key: str, spec: dict):
        import httpx2

        self.key, self.spec, self.http = key, spec, spec["http"]
        self.url = f"{base_url(self.http)}/embeddings"
        self.normalize = spec["normalize"]
        self.truncate_dim = spec.get("truncate_dim")
        variant = spec.get("variant")
        self.projection: Projection | None = for_variant(variant) if variant and variant["way"] == "pca" else None
        self.usage = Usage()
        self._dim: int | None = None
        self._stop = threading.Event()  # set when a request failed for good: the others stop retrying
        self._api_key = self._read_key()
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        concurrency = self.http["concurrency"]
        self._client = httpx2.Client(
            headers=headers,
            timeout=httpx2.Timeout(self.http["timeout_s"]),
            limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        # Worth a retry: the server was slow, or the connection failed or dropped. Any other
        # request error (a bad URL scheme, a proxy refusing) is the config's, and stops.
        self._transient = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
        self._request_error = httpx2.RequestError
        log.info("model %s: %s API at %s, model %r, %s, up to %d texts / ~%d tokens a request, %d at once",
                 key, self.http["provider"], self.url, self.http["model"],
                 f"{self.http['dimensions']} dims asked" if self.http.get("dimensions") else "the model's dims",
                 self.http["max_inputs_per_request"], self.http["max_tokens_per_request"], concurrency)

    def _read_key(self) -> str | None:
        name = self.http.get("api_key_env")
        if not name:
            return None
        value = os.environ.get(name, "")
        if not value.strip():
            raise ConfigError(f"model {self.key}: http.api_key_env names {name}, which is not set (or empty); "
                              f"export the API key in {name}")
        register_secret(value)
        return value.strip()

    # --- the encoder's face ---------------------------------------------------------------

    @property
    def identity(self) -> dict:
        """For provenance: what was asked, where, and what the server said it served."""
        return {
            "source": source_label(self.http),
            "backend": "http",
            "provider": self.http["provider"],
            "model": self.http["model"],
            "base_url": base_url(self.http),
            "dimensions": self.http.get("dimensions"),
            "api_key_env": self.http.get("api_key_env"),
            "served_models": sorted(self.usage.served_models),
            "truncate_dim": self.truncate_dim,
            "variant": self.spec.get("variant"),
        }

    @property
    def dim(self) -> int:
        if self.projection is not None:
            return self.projection.dim
        if self.truncate_dim:
            return self.truncate_dim
        if self.http.get("dimensions"):
            return self.http["dimensions"]
        if self._dim is None:  # the model's own: one short request says it
            self.encode(["dimension"], None, 1)
        return self._dim

    def encode(self, texts: list[str], prompt: str | None, batch_size: int = 0,
               input_type: str = "document") -> np.ndarray:
        """Texts → float32 vectors (rows, dim), in input order, normalized in float32 when asked.
        ``batch_size`` is a local model's; requests follow the http limits."""
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = [(prompt or "") + text for text in texts]
        try:
            raw = self._embed_all(inputs, input_type)
        except TextRefused as error:
            error.text = texts[error.position]  # as given, without the prompt
            raise
        if self.truncate_dim:
            raw = raw[:, : self.truncate_dim]
        vectors = l2_normalize(raw) if self.normalize else raw
        return vectors if self.projection is None else self.projection.apply(vectors)

    def usage_record(self) -> dict:
        return self.usage.record(self.spec)

    def close(self) -> None:
        self._client.close()

    # --- requests ---------------------------------------------------------------------------

    def _embed_all(self, inputs: list[str], input_type: str) -> np.ndarray:
        slices = list(request_slices(inputs, self.http["max_inputs_per_request"], self.http["max_tokens_per_request"]))
        rows: list[np.ndarray | None] = [None] * len(slices)
        self._stop.clear()
        with ThreadPoolExecutor(self.http["concurrency"], thread_name_prefix="http") as pool:
            futures = {pool.submit(self._slice_or_stop, inputs[start:stop], start, input_type): n
                       for n, (start, stop) in enumerate(slices)}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in done if future.exception() is not None]
            if failed:
                pool.shutdown(wait=True, cancel_futures=True)
                raise min(failed, key=futures.get).exception()
            for future, n in futures.items():
                rows[n] = future.result()
        return np.vstack(rows)

    def _slice_or_stop(self, texts: list[str], start: int, input_type: str) -> np.ndarray:
        try:
            return self._embed_slice(texts, start, input_type)
        except BaseException:
            self._stop.set()  # before this future completes: no slice after it sends a request
            raise

    def _embed_slice(self, texts: list[str], start: int, input_type: str) -> np.ndarray:
        """One request; a refused one of several texts is split in two to find the text."""
        try:
            return self._request(texts, input_type)
        except _Refused as refused:
            if len(texts) == 1:
                raise TextRefused(
                    f"{self.url} refused this text alone (model {self.http['model']!r}, HTTP {refused.status}): "
                    f"{refused}", start) from None
            half = len(texts) // 2
            log.info("model %s: HTTP %d for %d texts; splitting the request to find the one refused",
                     self.key, refused.status, len(texts))
            return np.vstack([self._embed_slice(texts[:half], start, input_type),
                              self._embed_slice(texts[half:], start + half, input_type)])

    def _request(self, texts: list[str], input_type: str) -> np.ndarray:
        answer = self._post(self._payload(texts, input_type), len(texts))
        vectors = self._vectors(answer, len(texts))
        usage = answer.get("usage") or {}
        tokens = usage.get("total_tokens") or usage.get("prompt_tokens")
        with self.usage.lock:
            self.usage.texts += len(texts)
            self.usage.tokens_estimated += sum(estimate_tokens(text) for text in texts)
            self.usage.tokens_billed += int(tokens or 0)
            self.usage.responses_without_usage += tokens is None
            if answer.get("model"):
                self.usage.served_models.add(str(answer["model"]))
        return vectors

    def _payload(self, texts: list[str], input_type: str) -> dict:
        payload = {"model": self.http["model"], "input": texts}
        dimensions = self.http.get("dimensions")
        if self.http["provider"] == "voyage":
            payload["input_type"] = input_type
            if dimensions:
                payload["output_dimension"] = dimensions
        else:
            payload["encoding_format"] = "float"
            if dimensions:
                payload["dimensions"] = dimensions
        return payload

    def _vectors(self, answer: dict, count: int) -> np.ndarray:
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != count:
            raise UserError(f"model {self.key}: {self.url} answered {len(data) if isinstance(data, list) else 'no'} "
                            f"embeddings for {count} texts")
        ordered = sorted(data, key=lambda item: item.get("index", 0))
        if [item.get("index", n) for n, item in enumerate(ordered)] != list(range(count)):
            raise UserError(f"model {self.key}: {self.url} answered indexes that are not 0..{count - 1}")
        vectors = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
        self._check_dim(vectors.shape[1])
        return vectors

    def _check_dim(self, dim: int) -> None:
        asked = self.http.get("dimensions")
        if asked and dim != asked:
            raise UserError(f"model {self.key}: {self.url} answered {dim} dims, but http.dimensions asks {asked} "
                            f"(does model {self.http['model']!r} take dimensions?)")
        if self._dim is not None and dim != self._dim:
            raise UserError(f"model {self.key}: {self.url} answered {dim} dims after {self._dim}")
        self._dim = dim

    def _post(self, payload: dict, count: int) -> dict:
        retries = self.http["retries"]
        for attempt in range(retries + 1):
            if self._stop.is_set():
                raise UserError(f"model {self.key}: stopped, another request failed for good")
            with self.usage.lock:
                self.usage.requests += 1
            try:
                response = self._client.post(self.url, json=payload)
            except self._transient as error:
                reason, wait_s = transient_reason(error, self.http["timeout_s"]), None
            except self._request_error as error:
                raise UserError(f"model {self.key}: cannot send to {self.url}: {type(error).__name__}: "
                                f"{error} (check http.base_url)") from None
            else:
                if response.status_code == 200:
                    return self._json(response)
                if response.status_code not in RETRIED_STATUSES and response.status_code < 500:
                    raise self._refusal(response, count)
                reason, wait_s = f"HTTP {response.status_code}", retry_after(response.headers.get("retry-after"))
            if attempt == retries:
                raise UserError(f"model {self.key}: {self.url} failed {attempt + 1} time(s), last with {reason} "
                                f"(http.retries: {retries}); the windows embedded before are kept")
            delay = wait_s if wait_s is not None else backoff(attempt)
            with self.usage.lock:
                self.usage.retries += 1
            log.warning("model %s: %s from %s; retry %d of %d in %.1f s", self.key, reason, self.url,
                        attempt + 1, retries, delay)
            self._stop.wait(delay)
        raise AssertionError("unreachable")

    def _json(self, response) -> dict:
        try:
            answer = response.json()
        except ValueError:
            raise UserError(f"model {self.key}: {self.url} answered 200 with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise UserError(f"model {self.key}: {self.url} answered a JSON {type(answer).__name__}, not an object")
        return answer

    def _refusal(self, response, count: int) -> Exception:
        status, message = response.status_code, self._server_message(response)
        if status in (401, 403):
            name = self.http.get("api_key_env")
            if not name:
                return UserError(f"model {self.key}: {self.url} wants an API key (HTTP {status}) and none was "
                                 "sent: name its variable in http.api_key_env")
            return UserError(f"model {self.key}: {self.url} refused the API key in ${name} (HTTP {status}); "
                             f"check that variable")
        if status == 404:
            return UserError(f"model {self.key}: {self.url} answered HTTP 404 for model {self.http['model']!r}: "
                             f"no such model there, or no such route (check http.model and http.base_url): {message}")
        if status in REFUSED_INPUT_STATUSES:
            return _Refused(status, message)
        return UserError(f"model {self.key}: {self.url} answered HTTP {status} (not retried): {message}")

    def _server_message(self, response) -> str:
        """The server's own words, short, without the key (some servers echo what they got)."""
        try:
            body = response.json()
            error = body.get("error", body) if isinstance(body, dict) else body
            text = str(error.get("message") or error.get("detail") or error) if isinstance(error, dict) else str(error)
        except ValueError:
            text = response.text
        if self._api_key:
            text = text.replace(self._api_key, REDACTED)
        return " ".join(text.split())[:MESSAGE_CHARS]


def request_slices(inputs: list[str], max_inputs: int, max_tokens: int):
    """(start, stop) of each request: at most ``max_inputs`` texts and about ``max_tokens``
    estimated tokens (a text over the limit alone goes alone; the server decides on it)."""
    start, tokens = 0, 0
    for position, text in enumerate(inputs):
        size = estimate_tokens(text)
        if position > start and (position - start >= max_inputs or tokens + size > max_tokens):
            yield start, position
            start, tokens = position, 0
        tokens += size
    if start < len(inputs):
        yield start, len(inputs)


def transient_reason(error: Exception, timeout_s: float) -> str:
    if "Timeout" in type(error).__name__:
        return f"{type(error).__name__} after {timeout_s} s (http.timeout_s)"
    return f"{type(error).__name__}: {error}"


def backoff(attempt: int) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random."""
    step = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2**attempt)
    return step / 2 + random.uniform(0, step / 2)


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), capped."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def load_http_encoder(key: str, spec: dict) -> HttpEncoder:
    return HttpEncoder(key, spec)
