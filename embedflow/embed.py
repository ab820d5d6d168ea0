"""Embedding a stream of windows of chunks, with the vector cache: the library of rule ``embed``.

Texts are encoded a window at a time (one encode() call, one Parquet row
group), each window's vectors taken from the vector cache where it has them
and encoded for the rest (``cache.windows.WindowEncoder``), so memory holds
one window of texts and vectors, not the corpus, and a killed job keeps the
windows it finished. Rule ``embed`` encodes one shard this way
(``embedflow.embed_shard``); ``embed_corpus`` embeds a whole chunks file in
one call (benchmarks, and code that needs no workflow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TextIO

from contextlib import ExitStack

from tqdm import tqdm

from embedflow import encoder as encoders
from embedflow.cache import VectorCache, run_lock
from embedflow.cache.windows import WindowEncoder
from embedflow.chunks import batched, iter_chunks, select_positions, validate_chunks
from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
from embedflow.errors import InputError, TextRefused
from embedflow.hashing import sha256_text
from embedflow.identity import encoder_identity, identity_key, is_resolved
from embedflow.provenance import Timer, encoder_usage, torch_device_info
from embedflow.tokens import token_counter
from embedflow.schema import default, defaults
from embedflow.variants import reduction_of

log = logging.getLogger(__name__)

# Defaults are written once, in config/config.schema.yaml. About embed.window_rows:
# sentence-transformers sorts each encode() call's texts by length to pad little,
# so a smaller window pads more (1,024: 0.91x a bare encode of 2,000 texts); a
# larger one raises the peak memory of a large corpus over a small one's (4,096:
# 1.25x at 20k vs 2k chunks). See docs/benchmarks.md, "Embed stage".
_EMBED = defaults("embed")
_SELECTION = defaults("test_mode")


@dataclass(frozen=True)
class EmbedSettings:
    model_key: str
    model: dict  # the model's config spec, defaults filled
    text_field: str = default("text_field")
    max_chunks: int | None = _SELECTION["max_chunks"]
    sample: str = _SELECTION["sample"]
    seed: int = _SELECTION["seed"]
    batch_size: int = default("batch_size", "model")
    device: str = _EMBED["device"]
    require_cuda: bool = _EMBED["require_cuda"]
    threads: int = 1  # the job's threads, as Snakemake gives them
    window_rows: int = _EMBED["window_rows"]
    cache_path: str | None = default("cache.path")  # None: no cache


@dataclass
class EncoderFacts:
    """What provenance says of the encoder when no model was loaded (every text was cached):
    the facts the encoder recorded with the cached rows."""

    dim: int
    normalize: bool
    compute_precision: str
    tf32: bool
    device: str | None
    max_seq_length: int | None
    identity: dict
    truncated_texts: int = 0
    http_usage: dict | None = None  # an API model's: nothing requested, nothing billed

    def usage_record(self) -> dict | None:
        return self.http_usage


@dataclass
class EmbedResult:
    rows: int
    corpus_rows: int
    corpus_sha256: str
    encoder: encoders.Encoder | EncoderFacts
    timer: Timer
    rejected: int = 0  # chunks left out by on_bad_chunk: skip
    cache: dict | None = None  # what the cache gave and what was encoded (provenance)


def encoder_facts(encoder) -> dict:
    """Stored with each cache segment: what an all-cached rerun reports of its encoder."""
    return {
        "dim": encoder.dim, "normalize": encoder.normalize, "compute_precision": encoder.compute_precision,
        "tf32": getattr(encoder, "tf32", False), "device": encoder.device, "max_seq_length": encoder.max_seq_length,
        "identity": encoder.identity, "device_kind": device_kind(encoder.device),
    }


def device_kind(device: str | None) -> str:
    """The kind of device a throughput was measured on: the GPU's name, or cpu."""
    info = torch_device_info(device)
    return info.get("gpu_name") or ("cpu" if not device or device == "cpu" else device)


def embed_corpus(
    chunks_path: str | Path,
    output: str | Path,
    settings: EmbedSettings,
    progress: TextIO | None = None,
    skip: Collection[int] = (),
) -> EmbedResult:
    """``skip``: positions of the chunks rejected by rule preflight (results/rejected/)."""
    corpus = validate_chunks(chunks_path, settings.text_field, skip=skip)
    positions = select_positions(corpus.count, settings.max_chunks, settings.sample, settings.seed, skip)
    selected = corpus.count if positions is None else len(positions)
    log.info("%s: %d chunks, embedding %d (field %r)%s", chunks_path, corpus.count, selected, settings.text_field,
             f"; {len(skip)} rejected chunk(s) left out" if skip else "")

    # Only id and text stay in the window, not each chunk's whole record.
    pairs = ((chunk.id, chunk.text) for chunk in iter_chunks(chunks_path, settings.text_field, positions, skip))
    rows, encoder, record, timer = embed_windows(batched(pairs, settings.window_rows), output, settings,
                                                 corpus.sha256, selected, progress, chunks_path)
    return EmbedResult(rows, corpus.count, corpus.sha256, encoder, timer, len(skip), record)


def embed_windows(pair_windows: Iterable[list[tuple[str, str]]], output: str | Path, settings: EmbedSettings,
                  corpus_sha256: str, total: int, progress: TextIO | None = None, chunks_path: str | Path = ""):
    """Each window of (id, text) of ``chunks_path``: from the cache and the model, written as one row
    group of ``output``, whose metadata names ``corpus_sha256``. Returns (rows, encoder or its cached
    facts, the cache and work record, timer)."""
    encoders.set_threads(settings.threads)
    windows = WindowEncoder(
        load=lambda: encoders.load_encoder(settings.model_key, settings.model, settings.device, settings.require_cuda),
        prompt=settings.model.get("document_prompt"),
        batch_size=settings.batch_size,
        facts=encoder_facts,
    )
    identity = _cache_identity(settings, windows)
    counter = token_counter(settings.model)  # after _cache_identity: a hub model may just have been fetched
    windows.count_tokens = counter.count if counter else None
    cache = None
    timer = Timer()
    with ExitStack() as stack:
        if identity is not None:
            stack.enter_context(run_lock(settings.cache_path))  # shared: prune waits for no run
            cache = _open_cache(settings, identity, windows)
        bar = stack.enter_context(tqdm(
            total=total, unit="chunk", file=progress, mininterval=5, ascii=True, disable=progress is None
        ))
        if windows.dim is None:
            windows.model()  # nothing cached for this encoder: every text needs the model
        writer = stack.enter_context(EmbeddingsWriter(output, _metadata(settings, corpus_sha256, windows)))
        for window in pair_windows:
            ids, texts = zip(*window)
            hashes = [sha256_text(t) for t in texts]
            try:
                vectors = windows.vectors(list(texts), hashes)
            except TextRefused as error:  # an API refused one text: name its chunk
                raise InputError(f"{chunks_path}: chunk id {ids[texts.index(error.text)]!r}: {error}") from None
            writer.write(list(ids), vectors, hashes)
            bar.update(len(window))
    timer.stop()
    encoder = windows.encoder or _cached_facts(windows, settings.model)
    counts = windows.counts
    log.info(
        "wrote %s: %d rows x %d dims in %.1f s; %d rows from the cache, %d texts encoded in %.1f model-seconds",
        output, writer.rows, encoder.dim, timer.seconds, counts.rows_reused, counts.texts_encoded,
        counts.model_seconds,
    )
    for name, value in encoder_usage(encoder).items():
        log.info("%s: %s", name, value)
    if encoder.truncated_texts:
        log.warning(
            "%d chunk(s) were longer than max_seq_length=%d tokens and were embedded truncated",
            encoder.truncated_texts, encoder.max_seq_length,
        )
    record = {**(cache or {"path": None}), **counts.record()}
    if windows.encoder is not None:  # the kind of device the throughput was measured on
        record["device_kind"] = device_kind(windows.encoder.device)
    return writer.rows, encoder, record, timer


def _cache_identity(settings: EmbedSettings, windows: WindowEncoder) -> dict | None:
    """The encoder's identity, for the cache; None when there is no cache to use."""
    if not settings.cache_path:
        return None
    identity = encoder_identity(settings.model)
    if not is_resolved(identity):
        windows.model()  # a hub model not downloaded yet: its files are known once it is
        identity = encoder_identity(settings.model)
    if not is_resolved(identity):
        log.warning("model %s: its files could not be identified; the vector cache is not used", settings.model_key)
        return None
    return identity


def _open_cache(settings: EmbedSettings, identity: dict, windows: WindowEncoder) -> dict:
    namespace = VectorCache(settings.cache_path).namespace(identity)
    windows.use_cache(namespace)
    log.info("vector cache %s: %d entries for this encoder (%s) in %d segment(s)%s",
             settings.cache_path, namespace.rows, namespace.key[:12], len(namespace.segments),
             f"; {len(namespace.bad)} bad segment(s) ignored" if namespace.bad else "")
    return {"path": str(settings.cache_path), "identity_key": identity_key(identity),
            "entries_at_start": namespace.rows, "bad_segments": sorted(namespace.bad)}


def _metadata(settings: EmbedSettings, corpus_sha256: str, windows: WindowEncoder) -> EmbeddingsMetadata:
    encoder = windows.encoder or _cached_facts(windows, settings.model)
    return EmbeddingsMetadata(
        model=settings.model_key,
        model_source=settings.model["source"],
        dim=encoder.dim,
        precision="float32",
        normalized=encoder.normalize,
        compute_precision=encoder.compute_precision,
        text_field=settings.text_field,
        corpus_sha256=corpus_sha256,
        reduction=reduction_of(settings.model.get("variant")),
        backend=encoder.identity.get("backend", "torch"),
        quantization=encoder.identity.get("quantization"),
    )


def _cached_facts(windows: WindowEncoder, spec: dict) -> EncoderFacts:
    from embedflow.backends.http_settings import is_http

    facts = windows.namespace.facts()
    identity = {**facts["identity"], "model_loaded": False}
    usage = None
    if is_http(spec):  # a rerun from the cache: zero requests, zero tokens billed, zero cost
        from embedflow.backends.http import Usage

        usage = Usage().record(spec)
    return EncoderFacts(facts["dim"], facts["normalize"], facts["compute_precision"], facts["tf32"],
                        facts["device"], facts["max_seq_length"], identity, http_usage=usage)


def record_run(settings: EmbedSettings, result: EmbedResult) -> None:
    """The throughput of this job, where ``embedflow plan`` finds it (embedflow.plan)."""
    from embedflow.cache.runs import record_throughput

    record_throughput(settings.cache_path, settings.model_key, result.cache)
