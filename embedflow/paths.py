"""Where every output lives: the one place for results/ path templates and marker names.

The rules (through rules/common.smk), the command line and the markers check
all take their paths from here, so a file moves by one edit. Templates use
Snakemake's wildcard syntax (``{model}``, ``{precision}``) and are plain
strings: ``template.format(model=..., precision=...)`` outside Snakemake.
This module is plain Python: the Snakefile imports it while planning.
"""

from __future__ import annotations

from pathlib import PurePath

RESULTS = "results"

# preflight: what was checked before the first model job, and the chunks that
# on_bad_chunk: skip leaves out (<corpus>: the chunks file's name without suffix)
PREFLIGHT = f"{RESULTS}/preflight.json"
REJECTED = f"{RESULTS}/rejected/{{corpus}}.jsonl"
# and the accepted ones: id, place in the file and record hash of each (embedflow.records_file)
RECORDS = f"{RESULTS}/records/{{corpus}}.parquet"

# embedflow plan: its last prediction, which embed's provenance shows beside the outcome
PLAN = f"{RESULTS}/plan.json"

# shard_plan (a checkpoint, one per corpus): the windows and shards of the selected chunks;
# embed: one part per model x shard (<shard>: its content digest); gather: the parts into one file
SHARD_PLAN = f"{RESULTS}/shards/{{corpus}}.plan.json"
SHARD_PART = f"{RESULTS}/embeddings/shards/{{model}}/{{shard}}.parquet"

# gather / project (float32), convert (the other precisions)
EMBEDDINGS = f"{RESULTS}/embeddings/embeddings_{{model}}_{{precision}}.parquet"
# Every output has a sibling provenance record.
PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE = "{output}" + PROVENANCE_SUFFIX

# backends onnx / openvino: the exported graph of a model (rule export_backend)
BACKEND_FOLDER = f"{RESULTS}/backends/{{model}}"

# variants
PCA_FILE = f"{RESULTS}/reduce/{{model}}.pca.npz"
HEAD_FOLDER = f"{RESULTS}/models/{{model}}"

# verify: probes per model; measures, then the reports (JSON for machines, Markdown for people)
PROBES = f"{RESULTS}/verify/{{model}}.probes.parquet"
MEASURES = f"{RESULTS}/verify/{{model}}_{{precision}}.measures.json"
VERIFY_REPORT = f"{RESULTS}/verify/{{model}}_{{precision}}.json"
VERIFY_MARKDOWN = f"{RESULTS}/verify/{{model}}_{{precision}}.md"

# database markers: what load and index built, checked by `embedflow check`
MARKERS = f"{RESULTS}/db"
LOADED_SUFFIX = ".loaded.json"
INDEX_SUFFIX = ".index.json"
LOADED = f"{MARKERS}/{{model}}_{{precision}}{LOADED_SUFFIX}"
INDEXED = f"{MARKERS}/{{model}}_{{precision}}{INDEX_SUFFIX}"

# evaluation
QUERY_VECTORS = f"{RESULTS}/eval/{{model}}.queries.parquet"
EVALUATION = f"{RESULTS}/eval/{{model}}_{{precision}}.json"
SUMMARY = f"{RESULTS}/eval/summary"  # .md and .csv
PLOT = f"{RESULTS}/eval/{{name}}.png"  # quality_vs_bytes | quality_vs_latency | quality_vs_dim | decision_pareto

# decision: every servable index x search setting of a table (sweep), then one report (decision)
SWEEP = f"{RESULTS}/eval/{{model}}_{{precision}}.sweep.json"
DECISION = f"{RESULTS}/eval/decision"  # .md and .json


def rejected_path(chunks: str) -> str:
    return REJECTED.format(corpus=PurePath(chunks).stem)


def records_path(chunks: str) -> str:
    return RECORDS.format(corpus=PurePath(chunks).stem)


def shard_plan_path(chunks: str) -> str:
    return SHARD_PLAN.format(corpus=PurePath(chunks).stem)


def shard_part_path(model: str, shard: str) -> str:
    return SHARD_PART.format(model=model, shard=shard)


def embeddings_path(model: str, precision: str) -> str:
    return EMBEDDINGS.format(model=model, precision=precision)


def provenance_of(path) -> str:
    return PROVENANCE.format(output=path)
