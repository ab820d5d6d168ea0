"""embedflow: the library behind the embedding workflow.

Each rule X of the workflow (rules/X.smk, scripts/X.py) has its logic in the
module of the same name here, entered through ``run(snakemake)``:
``preflight``, ``embed``, ``convert``, ``probe``, ``verify.measure`` and
``verify`` (a package), ``load``, ``index``, ``encode_queries``, ``evaluate``,
``eval_summary``, and for variants ``fit_pca``, ``project`` and
``train_head``; ``onstart`` holds the checks the Snakefile makes when a run
starts. Beside them are the shared pieces: ``chunks`` (the corpus, with
``storable``, ``text_files`` and ``rejected``), ``encoder`` (models, devices, compute
precision), ``precision`` (the dtype map and the casts), ``embeddings_file``
(the Parquet contract), ``vectors`` (vector math), ``projection``,
``database``, ``tables`` and ``search`` (pgvector), ``metrics``,
``provenance``, ``paths`` (where outputs live), ``schema`` (defaults), and
``cli`` (``embedflow search | check | psql``). The design is docs/design.md.

The names below are the public API that benchmarks and users may import
(``from embedflow import load_encoder``); everything else may change. Names
that are also modules (``search``, ``convert``) are imported from their module. They are
imported on first use, so importing the package stays cheap: planning a run
never loads torch.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    # the corpus
    "Chunk": "chunks",
    "validate_chunks": "chunks",
    "iter_chunks": "chunks",
    "select_positions": "chunks",
    # models
    "Encoder": "encoder",
    "load_encoder": "encoder",
    "resolve_source": "encoder",
    "weights_sha256": "encoder",
    "set_threads": "encoder",
    # embeddings files and precisions
    "EmbeddingsMetadata": "embeddings_file",
    "EmbeddingsWriter": "embeddings_file",
    "EmbeddingsBatch": "embeddings_file",
    "iter_batches": "embeddings_file",
    "read_all": "embeddings_file",
    "read_metadata": "embeddings_file",
    "row_count": "embeddings_file",
    "PRECISIONS": "precision",
    "to_float32": "precision",
    "l2_normalize": "vectors",
    "row_cosines": "vectors",
    "RunningTopK": "vectors",
    "Projection": "projection",
    # stages callable without Snakemake
    "EmbedSettings": "embed",
    "embed_corpus": "embed",
    "convert_file": "convert",
    "measure_embeddings": "verify",
    "verify_embeddings": "verify",
    "VerifySettings": "verify",
    "load_table": "load",
    "ServingSettings": "serving",
    "plan_table": "table_plan",
    "IndexSettings": "index",
    "build_index": "index",
    "measure_recall": "index",
    # pgvector
    "DatabaseSettings": "database",
    "connect": "database",
    "embedded_server": "database",
    "SearchPlan": "search",
    # config and records
    "load_config": "config_file",
    "canonical_json": "config",
    "read_provenance": "provenance",
    "retrieval_metrics": "metrics",
    "UserError": "errors",
    "InputError": "errors",
    "ConfigError": "errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'embedflow' has no attribute {name!r}")
    value = getattr(import_module(f"embedflow.{_PUBLIC[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
