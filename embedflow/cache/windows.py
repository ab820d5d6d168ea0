"""Vectors for a window of texts: from the cache where it has them, from the model for the rest.

``WindowEncoder`` is what embed calls per window. The model is loaded only when
a window has a text the cache lacks (a rerun that finds every text cached loads
no model at all), each distinct missing text is encoded once, and a window's
new vectors go to the cache as one segment as soon as they are encoded, so a
killed job keeps every window it finished. No torch here: the encoder comes
from ``load``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from embedflow.cache.store import Namespace


@dataclass
class EncodeCounts:
    """What happened, for provenance (and what ``embedflow plan`` predicted)."""

    rows: int = 0
    rows_reused: int = 0  # served from entries that were in the cache when the job started
    rows_encoded: int = 0  # from vectors this job encoded (a repeated text: reused within the job)
    texts_encoded: int = 0  # distinct texts the model received
    tokens_encoded: int = 0
    model_seconds: float = 0.0  # in encode() calls only
    load_seconds: float = 0.0
    segments_written: int = 0

    def record(self) -> dict:
        record = {key: getattr(self, key) for key in self.__dataclass_fields__}
        record["model_seconds"] = round(self.model_seconds, 3)
        record["load_seconds"] = round(self.load_seconds, 3)
        seconds = self.model_seconds
        record["texts_per_second"] = round(self.texts_encoded / seconds, 2) if seconds > 0 else None
        record["tokens_per_second"] = round(self.tokens_encoded / seconds, 2) if seconds > 0 else None
        return record


@dataclass
class WindowEncoder:
    load: Callable[[], object]  # -> an encoder (embedflow.encoder.load_encoder's contract)
    prompt: str | None
    batch_size: int
    namespace: Namespace | None = None  # None: no cache, every text is encoded
    count_tokens: Callable[[list[str]], int] | None = None
    facts: Callable[[object], dict] = lambda encoder: {}
    encoder: object | None = None
    counts: EncodeCounts = field(default_factory=EncodeCounts)

    def __post_init__(self):
        self._first_new = 0
        if self.namespace is not None:
            self.use_cache(self.namespace)

    def use_cache(self, namespace: Namespace) -> None:
        self.namespace = namespace
        # Rows of segments below this number were in the cache when the job started: "reused";
        # rows of segments this job writes are its own, "encoded".
        self._first_new = len(namespace.segments)

    def model(self):
        if self.encoder is None:
            started = time.perf_counter()
            self.encoder = self.load()
            self.counts.load_seconds += time.perf_counter() - started
        return self.encoder

    @property
    def dim(self) -> int | None:
        if self.encoder is not None:
            return self.encoder.dim
        return self.namespace.dim if self.namespace else None

    def vectors(self, texts: list[str], hashes: list[str]) -> np.ndarray:
        """float32 (rows, dim) for one window, in its order."""
        self.counts.rows += len(texts)
        if self.namespace is None:
            return self._encode(texts)
        vectors, sources = self.namespace.get_with_sources(hashes)
        self.counts.rows_reused += int(((sources >= 0) & (sources < self._first_new)).sum())
        self.counts.rows_encoded += int((sources >= self._first_new).sum())  # a text repeated in this job
        missing = np.flatnonzero(sources < 0)
        if not len(missing):
            return vectors
        first_of: dict[str, int] = {}
        for position in missing:
            first_of.setdefault(hashes[position], position)
        unique = list(first_of.values())
        new = self._encode([texts[p] for p in unique])
        self.namespace.put([hashes[p] for p in unique], new, self.facts(self.encoder))
        self.counts.segments_written += 1
        if vectors.shape[1] != new.shape[1]:
            vectors = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
        by_hash = {hashes[p]: row for row, p in enumerate(unique)}
        vectors[missing] = new[[by_hash[hashes[p]] for p in missing]]
        self.counts.rows_encoded += len(missing)
        return vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        encoder = self.model()
        started = time.perf_counter()
        vectors = encoder.encode(texts, self.prompt, self.batch_size)
        self.counts.model_seconds += time.perf_counter() - started
        self.counts.texts_encoded += len(texts)
        if self.namespace is None:
            self.counts.rows_encoded += len(texts)
        if self.count_tokens is not None:
            self.counts.tokens_encoded += self.count_tokens(texts)
        return vectors
