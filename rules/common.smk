import os
import sys

from snakemake.utils import validate

# The workflow's own package, importable without installing it (also in conda envs).
sys.path.insert(0, workflow.basedir)

from embedflow.config import canonical_json, model_output_slice, selection_slice

validate(config, "../config/config.schema.yaml")
for _spec in config["models"].values():
    validate(_spec, "../config/model.schema.yaml")


wildcard_constraints:
    model="|".join(sorted(config["models"])),
    precision="float32|float16|bfloat16|int8|binary",


EMBEDDINGS = "results/embeddings/embeddings_{model}_{precision}.parquet"
PROVENANCE = "{output}.provenance.json"
# Verify reports: JSON for machines, Markdown for people; the probes file is per model.
VERIFY_REPORT = "results/verify/{model}_{precision}.json"
VERIFY_MARKDOWN = "results/verify/{model}_{precision}.md"
MEASURES = "results/verify/{model}_{precision}.measures.json"
PROBES = "results/verify/{model}.probes.parquet"


def embeddings_path(model, precision):
    return EMBEDDINGS.format(model=model, precision=precision)


def provenance_of(path):
    return PROVENANCE.format(output=path)


def all_targets():
    """Every model × precision: embeddings, verify reports, and (for what pgvector
    can store, see LOADABLE_PRECISIONS) the table with its index."""
    return [
        path.format(model=model, precision=precision)
        for model in config["models"]
        for precision in config["precisions"]
        for path in (EMBEDDINGS, VERIFY_REPORT, VERIFY_MARKDOWN)
    ] + [
        INDEXED.format(model=model, precision=precision)
        for model in config["models"]
        for precision in LOADABLE_PRECISIONS
    ]


def unless_configured(precision, path):
    """The float32 file every precision derives from is kept only when asked for."""
    return path if precision in config["precisions"] else temp(path)


def model_spec(wildcards):
    return config["models"][wildcards.model]


def local_model_files(wildcards):
    """Files of a local model folder and of an adapter: editing them reruns embed."""
    spec = model_spec(wildcards)
    files = []
    for folder in (spec["source"], spec["adapter"]):
        if folder and not folder.startswith("bundled:") and os.path.isdir(folder):
            files += sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(folder)
                for name in names
            )
        elif folder == spec["adapter"] and folder:
            files.append(
                folder
            )  # missing: Snakemake reports it before running anything
    return files


def model_output_params(wildcards):
    return canonical_json(model_output_slice(model_spec(wildcards)))


def selection_params(wildcards):
    return canonical_json(selection_slice(config))


def embed_runtime_params(wildcards, resources):
    # Settings that change speed, not vectors. Snakemake leaves params computed
    # from `resources` out of its params rerun trigger (as it does for input,
    # output and threads), so changing these never makes an output stale.
    spec = model_spec(wildcards)
    return canonical_json(
        {
            "device": config["embed"]["device"],
            "require_cuda": config["embed"]["require_cuda"],
            "model": {"batch_size": spec["batch_size"]},
        }
    )


# --- verify ---------------------------------------------------------------------

from embedflow.config import measure_slice, probe_slice, verify_slice


def probe_model_params(wildcards):
    # What changes the probe vectors: the embed slice, and the query prompt.
    spec = model_spec(wildcards)
    return canonical_json(
        {**model_output_slice(spec), "query_prompt": spec["query_prompt"]}
    )


def probe_params(wildcards):
    return canonical_json(probe_slice(config))


def verify_reference(wildcards):
    # A derived precision is measured against the float32 file it was made from.
    # Where float32 is temp(), Snakemake keeps it until this job has run; moving
    # a threshold later reruns only `verify`, which never reads it.
    if wildcards.precision == "float32":
        return []
    return embeddings_path(wildcards.model, "float32")


def measure_params(wildcards):
    return canonical_json(measure_slice(config))


def verify_params(wildcards):
    # Only the thresholds: moving one reruns the judging, not the measuring.
    return canonical_json(
        verify_slice(config, model_spec(wildcards), wildcards.precision)
    )


def measure_runtime_params(wildcards, resources):
    # Batch size changes memory and speed, not the report: untracked (see embed_runtime_params).
    return canonical_json({"batch_rows": config["verify"]["batch_rows"]})


# --- database -----------------------------------------------------------------

from embedflow.database import DatabaseSettings, describe_target
from embedflow.tables import COLUMN_TYPES, table_name

LOADED = "results/db/{model}_{precision}.loaded.json"
INDEXED = "results/db/{model}_{precision}.index.json"
# pgvector has no int8 type: int8 embeddings stay in Parquet (see tables.column_type).
LOADABLE_PRECISIONS = [p for p in config["precisions"] if p in COLUMN_TYPES]
INDEX_BUILD_KEYS = ("maintenance_work_mem", "max_parallel_maintenance_workers")

# Validate every table name now, so that a bad template fails before any job runs.
for _model in config["models"]:
    for _precision in LOADABLE_PRECISIONS:
        table_name(config["database"]["table"], _model, _precision)


def table_for(wildcards):
    return table_name(config["database"]["table"], wildcards.model, wildcards.precision)


def database_params(wildcards):
    # Which server: the embedded data folder, or the DSN's host/db/user. Never the password.
    settings = DatabaseSettings(
        pgdata=config["database"]["pgdata"], dsn_env=config["database"]["dsn_env"]
    )
    return canonical_json(describe_target(settings))


def index_params(wildcards):
    index = config["index"]
    return canonical_json({k: v for k, v in index.items() if k not in INDEX_BUILD_KEYS})


def index_build_params(wildcards, resources):
    # Build memory and workers change speed, not the index: untracked (see embed_runtime_params).
    return canonical_json({k: config["index"][k] for k in INDEX_BUILD_KEYS})


# --- evaluation -----------------------------------------------------------------

QUERY_VECTORS = "results/eval/{model}.queries.parquet"
EVALUATION = "results/eval/{model}_{precision}.json"
SUMMARY = "results/eval/summary"


def evaluation_targets():
    if not config["queries"]:
        return []
    return [f"{SUMMARY}.md"]


def query_model_params(wildcards):
    # What changes the query vectors: the model's output settings and its query prompt.
    spec = model_spec(wildcards)
    return canonical_json(
        {**model_output_slice(spec), "query_prompt": spec["query_prompt"]}
    )


def evaluation_index(wildcards):
    # Through pgvector too, when pgvector can store this precision.
    if wildcards.precision in LOADABLE_PRECISIONS:
        return INDEXED.format(**wildcards)
    return []


def evaluation_params(wildcards):
    index = {k: v for k, v in config["index"].items() if k not in INDEX_BUILD_KEYS}
    return canonical_json(
        {"index": index, "rerank_candidates": config["index"]["rerank_candidates"]}
    )
