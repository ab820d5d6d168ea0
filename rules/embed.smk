rule embed:
    # One model pass per model, at its compute precision; every output
    # precision is derived from this float32 file by `convert`.
    input:
        chunks=config["chunks"],
        # What rule preflight left out (on_bad_chunk: skip); it also orders this job after it.
        rejected=REJECTED,
        model_files=local_model_files,
        # backend onnx / openvino: the exported graph (rule export_backend)
        export=exported_graph,
    output:
        parquet=unless_configured("float32", embeddings_path("{model}", "float32")),
        provenance=unless_configured(
            "float32", provenance_of(embeddings_path("{model}", "float32"))
        ),
    log:
        "results/logs/embed/{model}.log",
    benchmark:
        "results/benchmarks/embed/{model}.tsv"
    wildcard_constraints:
        # Models, and variants with a trained head; the others come from rule project.
        model=any_of(MODELS_BY_WAY[None] + MODELS_BY_WAY["projection_head"]),
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=1,
    params:
        model=model_output_params,
        selection=selection_params,
        runtime=embed_runtime_params,
        # Where cached vectors are, not what they are: computed from `resources`,
        # so untracked (see embed_runtime_params in common.smk) and never a rerun.
        cache=lambda wildcards, resources: canonical_json(
            {"path": config["cache"]["path"]}
        ),
    script:
        "../scripts/embed.py"
