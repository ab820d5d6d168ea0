# Shared by the files in rules/: the validated config, the model table, wildcard
# constraints, the path templates (embedflow.paths), the targets, and the params
# functions that several rules use. Each rule's own params stay in its file.

import os
import sys

from snakemake.utils import validate

# The workflow's own package, importable without installing it (also in conda envs).
sys.path.insert(0, workflow.basedir)

from embedflow.backends import (
    check_backends,
    computes_on_gpu,
    export_key,
    export_slice,
    is_exported,
    runtime_versions,
)
from embedflow.config import canonical_json, model_output_slice, selection_slice
from embedflow.database import DatabaseSettings, describe_target
from embedflow.paths import (
    BACKEND_FOLDER,
    DECISION,
    EMBEDDINGS,
    EVALUATION,
    HEAD_FOLDER,
    INDEXED,
    LOADED,
    MEASURES,
    PCA_FILE,
    PLOT,
    PREFLIGHT,
    PROBES,
    QUERY_VECTORS,
    SUMMARY,
    SHARD_PART,
    SWEEP,
    VERIFY_MARKDOWN,
    VERIFY_REPORT,
    embeddings_path,
    provenance_of,
    records_path,
    rejected_path,
    shard_part_path,
    shard_plan_path,
)
from embedflow.schema import precision_names
from embedflow.shards import shard_names
from embedflow.tables import COLUMN_TYPES, check_table_names, column_type, table_name
from embedflow.variants import (
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
check_backends(config["models"])
# Every model key as the rules see it: a variant resolved into its base's settings.
MODELS = {key: resolve(config["models"], key) for key in config["models"]}
MODELS_BY_WAY = keys_by_way(config["models"])
# Keys that run a model of their own (embed, probe, encode_queries); a truncation or PCA
# variant derives its corpus, query and probe vectors from its base's (rules/project.smk).
ENCODING_MODELS = MODELS_BY_WAY[None] + MODELS_BY_WAY["projection_head"]
PROJECTED_MODELS = MODELS_BY_WAY["truncate_dim"] + MODELS_BY_WAY["pca"]
# Models with backend onnx or openvino that have an export of their own (rule export_backend);
# a truncation or PCA variant runs its base's.
EXPORTED_MODELS = sorted(
    key
    for key, spec in MODELS.items()
    if is_exported(spec) and export_key(key, spec) == key
)
PRECISION_NAMES = precision_names()
# Every precision is derived from the float32 file of one model pass.
DERIVED_PRECISIONS = [p for p in PRECISION_NAMES if p != "float32"]
# pgvector has no int8 type: int8 embeddings stay in Parquet (see tables.column_type).
LOADABLE_PRECISIONS = [p for p in config["precisions"] if p in COLUMN_TYPES]
# Index settings that change build speed, not the index (untracked, see runtime_params_of).
INDEX_BUILD_KEYS = ("maintenance_work_mem", "max_parallel_maintenance_workers")
# ... and the one that says when a kept index's recall is measured again (rule index).
INDEX_UNTRACKED_KEYS = (*INDEX_BUILD_KEYS, "remeasure_recall_above")

# Validate every table name now, so that a bad template fails before any job runs:
# valid identifiers that PostgreSQL never cuts, one table per model × precision.
check_table_names(config["database"]["table"], config["models"], LOADABLE_PRECISIONS)
# The chunks on_bad_chunk: skip leaves out (rule preflight; empty when none).
REJECTED = rejected_path(config["chunks"])
# The accepted ones' ids, places and record hashes (rule preflight), which load reads.
RECORDS = records_path(config["chunks"])
# The windows and shards of the corpus (checkpoint shard_plan, shared by every model).
SHARD_PLAN = shard_plan_path(config["chunks"])
# What the run's start checks, when its jobs read them (check_this_run).
PAIRS_FILES = sorted(
    {
        spec["projection_head"]["pairs"]
        for spec in config["models"].values()
        if spec.get("projection_head")
    }
)
ADAPTERS = sorted({spec["adapter"] for spec in MODELS.values() if spec["adapter"]})


def any_of(keys):
    """A wildcard constraint matching exactly these keys (none: never matches)."""
    return "|".join(keys) if keys else "(?!)"


wildcard_constraints:
    model="|".join(sorted(config["models"])),
    precision="|".join(PRECISION_NAMES),


# --- targets --------------------------------------------------------------------


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


def evaluation_targets():
    if not config["queries"]:
        return []
    # decision: needs a table pgvector can serve (int8 alone has none)
    return [f"{SUMMARY}.md"] + ([f"{DECISION}.md"] if LOADABLE_PRECISIONS else [])


def unless_configured(precision, path):
    """The float32 file every precision derives from is kept only when asked for."""
    return path if precision in config["precisions"] else temp(path)


# --- models ---------------------------------------------------------------------


def model_spec(wildcards):
    return MODELS[wildcards.model]


def model_gpus(wildcards):
    """The GPUs a model job takes: one for torch, none for onnx / openvino (the CPU does the
    work) or http (the API does), so `--resources gpu=N` and SLURM's --gpus count only jobs
    that can use a GPU, and a CPU backend's job is never handed a cuda:N it would refuse.
    """
    return 1 if computes_on_gpu(MODELS[wildcards.model]) else 0


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


def exported_graph(wildcards):
    """The export folder a model's encoding jobs read (none for torch)."""
    spec = MODELS[wildcards.model]
    if not is_exported(spec):
        return []
    return [BACKEND_FOLDER.format(model=export_key(wildcards.model, spec))]


def model_output_params(wildcards):
    return canonical_json(model_output_slice(model_spec(wildcards)))


def query_encoder_slice(key):
    # What changes a model's query vectors: its output settings and its query prompt.
    spec = MODELS[key]
    return canonical_json(
        {**model_output_slice(spec), "query_prompt": spec["query_prompt"]}
    )


def query_encoder_params(wildcards):
    return query_encoder_slice(wildcards.model)


def head_base_params(wildcards):
    # A projection head trains on its base's torch model whatever the base's backend
    # (embedflow.train_head): the backend reaches the head's own export, not its training.
    spec = {
        **MODELS[variant_of(wildcards)["base"]],
        "backend": "torch",
        "quantization": None,
    }
    return canonical_json(
        {**model_output_slice(spec), "query_prompt": spec["query_prompt"]}
    )


def query_vector_params(wildcards):
    # What changes the query vectors alone: as above, less the document prompt,
    # which only goes before chunks (probe and train_head encode chunks too).
    spec = MODELS[wildcards.model]
    output = model_output_slice(spec)
    del output["document_prompt"]
    return canonical_json({**output, "query_prompt": spec["query_prompt"]})


# --- shards ---------------------------------------------------------------------


def shard_parts(wildcards):
    """What gather reads: a part per shard of the plan, known once the checkpoint ran."""
    plan = checkpoints.shard_plan.get().output.plan
    return [shard_part_path(wildcards.model, name) for name in shard_names(plan)]


def shard_part_records(wildcards):
    return [provenance_of(path) for path in shard_parts(wildcards)]


def selection_params(wildcards):
    return canonical_json(selection_slice(config))


def embed_runtime_params(wildcards, resources):
    # Settings that change speed, not vectors. Snakemake leaves params computed
    # from `resources` out of its params rerun trigger (as it does for input,
    # output and threads), so changing these never makes an output stale.
    return runtime_params_of(wildcards.model)


def runtime_params_of(key):
    spec = MODELS[key]
    model = {
        "batch_size": spec["batch_size"],
        "max_batch_tokens": spec["max_batch_tokens"],
    }
    if spec["backend"] == "http":
        # The whole block: the encoder reads its limits, key variable and price here
        # (untracked); the keys that change vectors are tracked by the output slice.
        model["http"] = spec["http"]
    return canonical_json(
        {
            "device": config["embed"]["device"],
            "require_cuda": config["embed"]["require_cuda"],
            "window_rows": config["embed"]["window_rows"],
            "model": model,
        }
    )


# --- variants -------------------------------------------------------------------


def variant_of(wildcards):
    return MODELS[wildcards.model]["variant"]


def base_float32(wildcards):
    return embeddings_path(variant_of(wildcards)["base"], "float32")


def base_query_vectors(wildcards):
    return QUERY_VECTORS.format(model=variant_of(wildcards)["base"])


def base_probes(wildcards):
    return PROBES.format(model=variant_of(wildcards)["base"])


def projection_file(wildcards):
    """A PCA variant's fitted projection (rule fit_pca); a truncation needs no file."""
    variant = variant_of(wildcards)
    return [variant["path"]] if variant["way"] == "pca" else []


def variant_params(wildcards):
    variant = variant_of(wildcards)
    return canonical_json({k: v for k, v in variant.items() if k != "path"})


# --- preflight ------------------------------------------------------------------


def preflight_plan():
    """What the disk estimate of the preflight rule reads from the config (untracked, an estimate)."""
    made = ["float32"] + [p for p in config["precisions"] if p != "float32"]
    models = {
        key: {
            "dim": (
                spec["variant"]["dim"]
                if spec["variant"]
                else spec["truncate_dim"] or (spec.get("http") or {}).get("dimensions")
            ),
            "source": spec["source"],
            "precisions": made,
            "tables": {
                p: LOADED.format(model=key, precision=p) for p in LOADABLE_PRECISIONS
            },
        }
        for key, spec in MODELS.items()
    }
    database = config["database"]
    return canonical_json(
        {
            "max_chunks": config["test_mode"]["max_chunks"],
            "outputs": {
                "models": models,
                "embeddings": EMBEDDINGS,
                "pgdata": None if database["dsn_env"] else database["pgdata"],
                "index_method": config["index"]["method"],
                "index_m": config["index"]["m"],
            },
        }
    )


def check_this_run():
    """onstart: what this run's jobs need and preflight does not check (embedflow.onstart).
    One line and exit 1 when something is wrong, before any job starts."""
    from snakemake.logging import logger

    from embedflow.errors import UserError
    from embedflow.onstart import check_run

    rules = {job.rule.name for job in workflow.dag.needrun_jobs()}
    try:
        check_run(
            config,
            rules,
            pairs=PAIRS_FILES,
            adapters=ADAPTERS,
            preflight_report=PREFLIGHT,
        )
    except UserError as error:
        logger.error(f"Before any job: {error}")
        sys.exit(1)


# --- database -------------------------------------------------------------------

# The embedded server's data folder is served by one node at a time: on a cluster its
# rules (load, index, evaluate, sweep) run where snakemake runs (localrule). With a DSN
# every node reaches the server, so they go to the cluster like any other job.
DATABASE_RULES_RUN_LOCALLY = config["database"]["dsn_env"] is None


def table_for(wildcards):
    # int8 has no pgvector type: fail while planning, before any job runs.
    column_type(wildcards.precision)
    return table_name(config["database"]["table"], wildcards.model, wildcards.precision)


def database_params(wildcards):
    # Which server: the embedded data folder, or the DSN's host/db/user. Never the password.
    settings = DatabaseSettings(
        pgdata=config["database"]["pgdata"], dsn_env=config["database"]["dsn_env"]
    )
    return canonical_json(describe_target(settings))


def index_settings():
    """The index settings that define the index and its searches (not the build's)."""
    return {k: v for k, v in config["index"].items() if k not in INDEX_UNTRACKED_KEYS}


def index_params(wildcards):
    return canonical_json(index_settings())
