"""Stage ``embed``: one shard of the corpus → its part, ``results/embeddings/shards/<model>/<shard>.parquet``.

Checkpoint ``shard_plan`` cut the selected chunks into windows and shards by
content (``embedflow.shards``); an embed job encodes one shard, a window at a
time (one encode() call and one Parquet row group each), on the GPU slot it
holds (``embedflow.device_slots``); rule gather streams the parts into
``embeddings_<model>_float32.parquet``. The shard is checked against the
chunks file before the model loads. ``embed_corpus`` embeds a whole chunks
file in one call (benchmarks, and code that needs no workflow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from embedflow import encoder as encoders
from embedflow.chunks import batched, iter_chunks, select_positions, validate_chunks
from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
from embedflow.hashing import sha256_text
from embedflow.provenance import Timer, torch_device_info, write_provenance
from embedflow.schema import default, defaults
from embedflow.shards import Shard, ShardPlan, check_shard, read_plan, shard_pairs, split_windows
from embedflow.snakemake_rule import params_json, run_model_rule
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


@dataclass
class EmbedResult:
    rows: int
    corpus_rows: int
    corpus_sha256: str
    encoder: encoders.Encoder
    timer: Timer
    rejected: int = 0  # chunks left out by on_bad_chunk: skip
    encoded: int = 0  # texts the model received
    reused: int = 0  # vectors that were not encoded again

    def shard_record(self) -> dict:
        """What provenance says of the work: rows, encoded against reused, texts per second."""
        seconds = self.timer.seconds or 0.0
        return {"rows": self.rows, "encoded": self.encoded, "reused": self.reused,
                "seconds": round(seconds, 3),
                "encoded_texts_per_second": round(self.encoded / seconds, 2) if seconds > 0 else None}


def _metadata(settings: EmbedSettings, encoder, corpus_sha256: str) -> EmbeddingsMetadata:
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
    )


def encode_windows(windows: Iterable[list[tuple[str, str]]], encoder, writer: EmbeddingsWriter,
                   settings: EmbedSettings, bar) -> int:
    """Each window of (id, text) in one encode() call, written as one row group; the texts encoded."""
    prompt = settings.model.get("document_prompt")
    encoded = 0
    for window in windows:
        ids, texts = zip(*window)
        vectors = encoder.encode(list(texts), prompt, settings.batch_size)
        writer.write(list(ids), vectors, [sha256_text(t) for t in texts])
        encoded += len(texts)
        bar.update(len(window))
    return encoded


def _progress_bar(total: int, progress: TextIO | None):
    return tqdm(total=total, unit="chunk", file=progress, mininterval=5, ascii=True, disable=progress is None)


def _log_done(output, rows: int, encoder, timer: Timer) -> None:
    log.info("wrote %s: %d rows x %d dims in %.1f s (%.1f chunks/s)",
             output, rows, encoder.dim, timer.seconds, rows / max(timer.seconds, 1e-9))
    if encoder.truncated_texts:
        log.warning(
            "%d chunk(s) were longer than max_seq_length=%d tokens and were embedded truncated",
            encoder.truncated_texts, encoder.max_seq_length,
        )


def _load(settings: EmbedSettings):
    encoders.set_threads(settings.threads)
    return encoders.load_encoder(settings.model_key, settings.model, settings.device, settings.require_cuda)


def embed_corpus(
    chunks_path: str | Path,
    output: str | Path,
    settings: EmbedSettings,
    progress: TextIO | None = None,
    skip: Collection[int] = (),
) -> EmbedResult:
    """A whole chunks file in fixed windows of ``window_rows``. ``skip``: positions of the chunks
    rejected by rule preflight (results/rejected/)."""
    corpus = validate_chunks(chunks_path, settings.text_field, skip=skip)
    positions = select_positions(corpus.count, settings.max_chunks, settings.sample, settings.seed, skip)
    selected = corpus.count if positions is None else len(positions)
    log.info("%s: %d chunks, embedding %d (field %r)%s", chunks_path, corpus.count, selected, settings.text_field,
             f"; {len(skip)} rejected chunk(s) left out" if skip else "")
    encoder = _load(settings)
    timer = Timer()
    # Only id and text stay in the window, not each chunk's whole record.
    pairs = ((chunk.id, chunk.text) for chunk in iter_chunks(chunks_path, settings.text_field, positions, skip))
    with EmbeddingsWriter(output, _metadata(settings, encoder, corpus.sha256)) as writer, \
            _progress_bar(selected, progress) as bar:
        encoded = encode_windows(batched(pairs, settings.window_rows), encoder, writer, settings, bar)
    timer.stop()
    _log_done(output, writer.rows, encoder, timer)
    return EmbedResult(writer.rows, corpus.count, corpus.sha256, encoder, timer, len(skip), encoded)


def embed_shard(chunks_path: str | Path, plan: ShardPlan, shard: Shard, output: str | Path,
                settings: EmbedSettings, progress: TextIO | None = None) -> EmbedResult:
    """One shard of a plan, window by window as the plan cut it. Its part's metadata names the
    shard's content digest where a whole file names the corpus's (rule gather writes that)."""
    check_shard(chunks_path, plan, shard)
    log.info("%s: shard %s, %d chunks in %d window(s), %r to %r (field %r)", chunks_path, shard.name,
             shard.rows, len(shard.windows), shard.first_id, shard.last_id, plan.text_field)
    encoder = _load(settings)
    timer = Timer()
    windows = split_windows(shard_pairs(chunks_path, plan, shard), shard.windows)
    with EmbeddingsWriter(output, _metadata(settings, encoder, shard.sha256)) as writer, \
            _progress_bar(shard.rows, progress) as bar:
        encoded = encode_windows(windows, encoder, writer, settings, bar)
    timer.stop()
    _log_done(output, writer.rows, encoder, timer)
    return EmbedResult(writer.rows, plan.corpus["chunks"], plan.corpus["sha256"], encoder, timer,
                       plan.corpus["rejected"], encoded, writer.rows - encoded)


def main(snakemake) -> None:
    model = params_json(snakemake, "model")
    runtime = params_json(snakemake, "runtime")
    plan = read_plan(snakemake.input.plan)
    shard = plan.shard(snakemake.wildcards.shard)
    settings = EmbedSettings(
        model_key=snakemake.wildcards.model,
        model={**model, **runtime["model"]},
        text_field=plan.text_field,
        batch_size=runtime["model"]["batch_size"],
        device=runtime["device"],  # the GPU slot's device (run_model_rule)
        require_cuda=runtime["require_cuda"],
        threads=snakemake.threads,
        window_rows=plan.window_rows,
    )
    with open(snakemake.log[0], "a", encoding="utf-8") as progress:
        result = embed_shard(snakemake.input.chunks, plan, shard, snakemake.output.parquet, settings, progress)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model, "runtime (does not change the output)": runtime},
        inputs=list(snakemake.input),
        timing=result.timer.record(result.rows, unit="chunks"),
        device={
            **torch_device_info(result.encoder.device),
            "compute_precision": result.encoder.compute_precision,
            "tf32": result.encoder.tf32,
        },
        model=result.encoder.identity,
        extra={
            "shard": {"name": shard.name, "sha256": shard.sha256, "windows": len(shard.windows),
                      "first_id": shard.first_id, "last_id": shard.last_id, **result.shard_record()},
            "corpus": {"path": str(snakemake.input.chunks), "text_field": plan.text_field},
            "embedding": {
                "dim": result.encoder.dim,
                "normalized": result.encoder.normalize,
                "max_seq_length": result.encoder.max_seq_length,
                "truncated_chunks": result.encoder.truncated_texts,
            },
        },
    )


def run(snakemake) -> None:
    run_model_rule(snakemake, main)
