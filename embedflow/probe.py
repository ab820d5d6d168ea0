"""Stage ``probe``: the model work that ``verify`` needs, done once per model.

Loads the model as ``embed`` does (same source, revision, adapter, compute
precision, truncation, sequence length, normalization) and writes
``results/verify/<model>.probes.parquet`` (see ``embedflow.probes_file``):

* the configured probe queries, encoded with the model's ``query_prompt``;
* the first ``reencode_rows`` chunks of the float32 embeddings file,
  re-encoded with the ``document_prompt``;
* when the model has an adapter, every probe text encoded again with the
  adapter disabled (peft's ``disable_adapters``; the same loaded model), and
  the cosine between the two recorded.

Every ``verify`` job of the model (one per precision) reads this file, so the
model runs once per model and verify runs on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedflow import encoder as encoders
from embedflow.chunks import find_texts
from embedflow.embeddings_file import iter_batches
from embedflow.errors import InputError
from embedflow.hashing import sha256_text
from embedflow.probes_file import Probes, write_probes
from embedflow.provenance import Timer, encoder_usage, torch_device_info, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.device_slots import run_model_rule
from embedflow.snakemake_rule import params_json
from embedflow.vectors import row_cosines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSettings:
    model_key: str
    model: dict  # the model's output slice plus query_prompt
    queries: list[str]
    reencode_rows: int = 8
    text_field: str = "content"
    batch_size: int = 32
    device: str = "auto"
    require_cuda: bool = False
    threads: int = 1


@dataclass
class ProbeResult:
    probes: Probes
    encoder: encoders.Encoder
    timer: Timer


def first_ids(float32_path: str | Path, count: int) -> list[str]:
    """ids of the first ``count`` rows of an embeddings file."""
    ids: list[str] = []
    if count > 0:
        for batch in iter_batches(float32_path, batch_rows=count):
            ids += batch.ids[: count - len(ids)]
            if len(ids) >= count:
                break
    return ids


def _encode_without_adapter(encoder: encoders.Encoder, groups, batch_size: int) -> np.ndarray:
    model = encoder.model
    model.disable_adapters()
    try:
        return np.vstack([encoder.encode(texts, prompt, batch_size, kind) for texts, prompt, kind in groups])
    finally:
        model.enable_adapters()


def probe_model(
    float32_path: str | Path,
    chunks_path: str | Path,
    output: str | Path,
    settings: ProbeSettings,
    skip: Collection[int] = (),
) -> ProbeResult:
    """``skip``: positions of the chunks rule preflight rejected (results/rejected/)."""
    ids = first_ids(float32_path, settings.reencode_rows)
    texts_by_id = find_texts(chunks_path, settings.text_field, ids, skip)
    missing = [chunk_id for chunk_id in ids if chunk_id not in texts_by_id]
    if missing:
        raise InputError(
            f"{chunks_path}: has no chunk with id {missing[0]!r}, which {float32_path} holds; "
            "the chunks file changed after embedding"
        )
    documents = [texts_by_id[chunk_id] for chunk_id in ids]

    encoders.set_threads(settings.threads)
    encoder = encoders.load_encoder(settings.model_key, settings.model, settings.device, settings.require_cuda)
    timer = Timer()
    groups = [(list(settings.queries), settings.model.get("query_prompt"), "query")]
    if documents:
        groups.append((documents, settings.model.get("document_prompt"), "document"))
    vectors = np.vstack([encoder.encode(texts, prompt, settings.batch_size, kind) for texts, prompt, kind in groups])

    without = None
    adapter_applied = bool(encoder.identity.get("adapter_applied"))
    if adapter_applied:
        without = _encode_without_adapter(encoder, groups, settings.batch_size)
        cosines = np.nan_to_num(row_cosines(vectors, without)[0], nan=0.0)  # a zero row: 0
        log.info(
            "adapter %s: cosine with / without it over %d probe texts: mean %.6f, max %.6f",
            settings.model["adapter"], len(cosines), cosines.mean(), cosines.max(),
        )
    timer.stop()
    probes = Probes(
        info={
            "model": settings.model_key,
            "source": settings.model["source"],
            "dim": encoder.dim,
            "truncate_dim": settings.model.get("truncate_dim"),
            "normalize": encoder.normalize,
            "query_prompt": settings.model.get("query_prompt"),
            "document_prompt": settings.model.get("document_prompt"),
            "adapter": settings.model.get("adapter"),
            "adapter_applied": adapter_applied,
            "compute_precision": encoder.compute_precision,
            "device": encoder.device,
        },
        kinds=["query"] * len(settings.queries) + ["document"] * len(documents),
        ids=[None] * len(settings.queries) + ids,
        texts=list(settings.queries) + documents,
        text_sha256=[sha256_text(q) for q in settings.queries] + [sha256_text(d) for d in documents],
        vectors=vectors,
        without_adapter=without,
    )
    write_probes(output, probes)
    log.info(
        "wrote %s: %d probe queries and %d re-encoded chunks, %d dims, in %.1f s",
        output, len(settings.queries), len(documents), encoder.dim, timer.seconds,
    )
    return ProbeResult(probes, encoder, timer)


def _main(snakemake) -> None:
    model = params_json(snakemake, "model")
    probes = params_json(snakemake, "probes")
    runtime = params_json(snakemake, "runtime")
    settings = ProbeSettings(
        model_key=snakemake.wildcards.model,
        model={**model, **runtime["model"]},
        queries=probes["queries"],
        reencode_rows=probes["reencode_rows"],
        text_field=probes["text_field"],
        batch_size=runtime["model"]["batch_size"],
        device=runtime["device"],
        require_cuda=runtime["require_cuda"],
        threads=snakemake.threads,
    )
    skip = rejected_positions(snakemake.input.rejected)
    result = probe_model(snakemake.input.parquet, snakemake.input.chunks, snakemake.output.probes, settings, skip)
    write_provenance(
        snakemake.output.probes,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model, "probes": probes, "runtime (does not change the output)": runtime},
        inputs=[snakemake.input.parquet, snakemake.input.chunks, snakemake.input.rejected],
        timing=result.timer.record(len(result.probes.texts), unit="texts"),
        device={
            **torch_device_info(result.encoder.device),
            "compute_precision": result.encoder.compute_precision,
            "tf32": result.encoder.tf32,
        },
        model=result.encoder.identity,
        extra={"probe": result.probes.info, **encoder_usage(result.encoder)},
    )


def run(snakemake) -> None:
    """Rule ``probe``."""
    run_model_rule(snakemake, _main)
