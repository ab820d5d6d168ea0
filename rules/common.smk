import os
import sys

from snakemake.utils import validate

# The workflow's own package, importable without installing it (also in conda envs).
sys.path.insert(0, workflow.basedir)

from embedflow.config import canonical_json, model_output_slice, selection_slice
from embedflow.variants import (
    HEAD_FOLDER,
    PCA_FILE,
    check_models,
    is_variant,
    keys_by_way,
    reduction_of,
    resolve,
)

validate(config, "../config/config.schema.yaml")
for _spec in config["models"].values():
    # A model has a source; a variant reduces another model's vectors (embedflow.variants).
    validate(
        _spec,
        (
            "../config/variant.schema.yaml"
            if is_variant(_spec)
            else "../config/model.schema.yaml"
        ),
    )
check_models(config["models"])
# Every model key as the rules see it: a variant resolved into its base's settings.
MODELS = {key: resolve(config["models"], key) for key in config["models"]}
MODELS_BY_WAY = keys_by_way(config["models"])


def any_of(keys):
    """A wildcard constraint matching exactly these keys (none: never matches)."""
    return "|".join(keys) if keys else "(?!)"


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
    return MODELS[wildcards.model]


def local_model_files(wildcards):
    """Files of a local model folder and of an adapter, a variant's PCA file, or a
    trained head's folder: editing them reruns what the model made."""
    return model_files_of(wildcards.model)


def model_files_of(key):
    spec = MODELS[key]
    variant = spec["variant"]
    if variant and variant["way"] == "projection_head":
        return [spec["source"]]  # rule train_head's folder
    files = [variant["path"]] if variant and variant["way"] == "pca" else []
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
    return runtime_params_of(wildcards.model)


def runtime_params_of(key):
    spec = MODELS[key]
    return canonical_json(
        {
            "device": config["embed"]["device"],
            "require_cuda": config["embed"]["require_cuda"],
            "window_rows": config["embed"]["window_rows"],
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
    # What changes the query vectors: the model's output settings and its query
    # prompt; the document prompt only goes before chunks.
    spec = model_spec(wildcards)
    output = model_output_slice(spec)
    del output["document_prompt"]
    return canonical_json({**output, "query_prompt": spec["query_prompt"]})


def evaluation_index(wildcards):
    # Through pgvector too, when pgvector can store this precision.
    if wildcards.precision in LOADABLE_PRECISIONS:
        return INDEXED.format(**wildcards)
    return []


def evaluation_params(wildcards):
    # What this precision's evaluation reads: the index settings where pgvector holds
    # the precision, the re-rank depth for binary. int8 (Parquet only) reads neither.
    evaluation = {}
    if wildcards.precision in LOADABLE_PRECISIONS:
        index = config["index"]
        evaluation["index"] = {
            k: v for k, v in index.items() if k not in INDEX_BUILD_KEYS
        }
    if wildcards.precision == "binary":
        evaluation["rerank_candidates"] = config["index"]["rerank_candidates"]
    return canonical_json(evaluation)


def evaluation_table(wildcards):
    # No table for a precision pgvector cannot hold: table settings never rerun it.
    return table_for(wildcards) if wildcards.precision in LOADABLE_PRECISIONS else ""


def evaluation_database(wildcards):
    if wildcards.precision not in LOADABLE_PRECISIONS:
        return canonical_json(None)
    return database_params(wildcards)


# --- variants -------------------------------------------------------------------


def variant_of(wildcards):
    return MODELS[wildcards.model]["variant"]


def base_float32(wildcards):
    return embeddings_path(variant_of(wildcards)["base"], "float32")


def pca_file_of(wildcards):
    variant = variant_of(wildcards)
    return variant["path"] if variant["way"] == "pca" else []


def base_model_files(wildcards):
    return model_files_of(variant_of(wildcards)["base"])


def head_pairs(wildcards):
    return variant_of(wildcards)["pairs"]


def variant_params(wildcards):
    variant = variant_of(wildcards)
    return canonical_json({k: v for k, v in variant.items() if k != "path"})


def head_base_params(wildcards):
    # What changes the base's vectors, and the prompts the pairs are encoded with.
    spec = MODELS[variant_of(wildcards)["base"]]
    return canonical_json(
        {**model_output_slice(spec), "query_prompt": spec["query_prompt"]}
    )


def head_selection_params(wildcards):
    # Pairs name their passages among all chunks: test-mode sampling never changes the head.
    return canonical_json({"text_field": config["text_field"]})


def head_runtime_params(wildcards, resources):
    # The base's batch size and the device: speed, not the head (see embed_runtime_params).
    return runtime_params_of(variant_of(wildcards)["base"])


def variants_params(wildcards):
    # Which model keys are variants of which base, and how: labels for the summary.
    return canonical_json(
        {
            key: reduction_of(spec["variant"])
            for key, spec in MODELS.items()
            if spec["variant"]
        }
    )
