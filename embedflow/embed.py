"""Stage ``embed``: chunks file → ``embeddings_<model>_float32.parquet``.

The chunks file is validated before the model loads (rule preflight did it
first; the chunks it rejected under ``on_bad_chunk: skip`` are skipped here,
any other bad chunk fails the job). Chunks are then read
again as a stream, encoded a window at a time and written as one Parquet row
group per window, so memory holds one window of texts and vectors, not the
corpus. Every output precision is derived from this file by ``convert``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Collection
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from embedflow import encoder as encoders
from embedflow.chunks import batched, iter_chunks, select_positions, validate_chunks
from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
from embedflow.hashing import sha256_text
from embedflow.provenance import Timer, torch_device_info, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.schema import default, defaults
from embedflow.snakemake_rule import params_json, run_rule
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

    encoders.set_threads(settings.threads)
    encoder = encoders.load_encoder(settings.model_key, settings.model, settings.device, settings.require_cuda)
    meta = EmbeddingsMetadata(
        model=settings.model_key,
        model_source=settings.model["source"],
        dim=encoder.dim,
        precision="float32",
        normalized=encoder.normalize,
        compute_precision=encoder.compute_precision,
        text_field=settings.text_field,
        corpus_sha256=corpus.sha256,
        reduction=reduction_of(settings.model.get("variant")),
        backend=encoder.identity.get("backend", "torch"),
        quantization=encoder.identity.get("quantization"),
    )
    prompt = settings.model.get("document_prompt")
    timer = Timer()
    # Only id and text stay in the window, not each chunk's whole record.
    pairs = ((chunk.id, chunk.text) for chunk in iter_chunks(chunks_path, settings.text_field, positions, skip))
    with EmbeddingsWriter(output, meta) as writer, tqdm(
        total=selected, unit="chunk", file=progress, mininterval=5, ascii=True, disable=progress is None
    ) as bar:
        for window in batched(pairs, settings.window_rows):
            ids, texts = zip(*window)
            vectors = encoder.encode(list(texts), prompt, settings.batch_size)
            writer.write(list(ids), vectors, [sha256_text(t) for t in texts])
            bar.update(len(window))
    timer.stop()
    log.info(
        "wrote %s: %d rows x %d dims in %.1f s (%.1f chunks/s)",
        output, writer.rows, encoder.dim, timer.seconds, writer.rows / max(timer.seconds, 1e-9),
    )
    if encoder.truncated_texts:
        log.warning(
            "%d chunk(s) were longer than max_seq_length=%d tokens and were embedded truncated",
            encoder.truncated_texts, encoder.max_seq_length,
        )
    return EmbedResult(writer.rows, corpus.count, corpus.sha256, encoder, timer, len(skip))


def main(snakemake) -> None:
    model = params_json(snakemake, "model")
    selection = params_json(snakemake, "selection")
    runtime = params_json(snakemake, "runtime")
    settings = EmbedSettings(
        model_key=snakemake.wildcards.model,
        model={**model, **runtime["model"]},
        text_field=selection["text_field"],
        max_chunks=selection.get("max_chunks"),
        sample=selection.get("sample", EmbedSettings.sample),
        seed=selection.get("seed", EmbedSettings.seed),
        batch_size=runtime["model"]["batch_size"],
        device=runtime["device"],
        require_cuda=runtime["require_cuda"],
        threads=snakemake.threads,
        window_rows=runtime["window_rows"],
    )
    skip = rejected_positions(snakemake.input.rejected)
    with open(snakemake.log[0], "a", encoding="utf-8") as progress:
        result = embed_corpus(snakemake.input.chunks, snakemake.output.parquet, settings, progress, skip)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model, "selection": selection, "runtime (does not change the output)": runtime},
        inputs=list(snakemake.input),
        timing=result.timer.record(result.rows, unit="chunks"),
        device={
            **torch_device_info(result.encoder.device),
            "compute_precision": result.encoder.compute_precision,
            "tf32": result.encoder.tf32,
        },
        model=result.encoder.identity,
        extra={
            "corpus": {
                "path": str(snakemake.input.chunks),
                "sha256": result.corpus_sha256,
                "chunks": result.corpus_rows,  # accepted
                "rejected": result.rejected,
                "rejected_file": str(snakemake.input.rejected),
                "embedded": result.rows,
            },
            "embedding": {
                "dim": result.encoder.dim,
                "normalized": result.encoder.normalize,
                "max_seq_length": result.encoder.max_seq_length,
                "truncated_chunks": result.encoder.truncated_texts,
            },
        },
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
