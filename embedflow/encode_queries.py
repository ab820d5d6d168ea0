"""Stage ``encode_queries``: the query set encoded once per model.

Queries are encoded once per model, with the model's ``query_prompt``, in
float32; ``evaluate`` gives them each precision's treatment.
"""

from __future__ import annotations

import logging

from embedflow.query_set import read_queries
from embedflow.provenance import Timer, encoder_usage, write_provenance
from embedflow.device_slots import run_model_rule
from embedflow.snakemake_rule import params_json

log = logging.getLogger(__name__)


def encode_queries_main(snakemake) -> None:
    from embedflow import encoder as encoders
    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_file, sha256_text

    timer = Timer()
    model = params_json(snakemake, "model")
    runtime = params_json(snakemake, "runtime")
    spec = {**model, **runtime["model"]}
    query_ids, texts, _ = read_queries(snakemake.input.queries)
    encoders.set_threads(snakemake.threads)
    encoder = encoders.load_encoder(snakemake.wildcards.model, spec, runtime["device"], runtime["require_cuda"])
    vectors = encoder.encode(texts, spec.get("query_prompt"), spec["batch_size"], input_type="query")
    meta = EmbeddingsMetadata(
        model=snakemake.wildcards.model, model_source=spec["source"], dim=encoder.dim, precision="float32",
        normalized=encoder.normalize, compute_precision=encoder.compute_precision, text_field="query",
        corpus_sha256=sha256_file(snakemake.input.queries),
        backend=encoder.identity.get("backend", "torch"), quantization=encoder.identity.get("quantization"),
    )
    with EmbeddingsWriter(snakemake.output.queries, meta) as writer:
        writer.write(query_ids, vectors, [sha256_text(text) for text in texts])
    log.info("encoded %d queries with query prompt %r", len(texts), spec.get("query_prompt"))
    write_provenance(
        snakemake.output.queries, rule=snakemake.rule, wildcards=dict(snakemake.wildcards),
        config={"model": model, "runtime (does not change the output)": runtime},
        inputs=[snakemake.input.queries], timing=timer.stop().record(len(texts), unit="queries"),
        model=encoder.identity, extra=encoder_usage(encoder),
    )


def run(snakemake) -> None:
    run_model_rule(snakemake, encode_queries_main)
