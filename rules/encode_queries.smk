rule encode_queries:
    # The query set, encoded once per model with its query prompt, in float32
    # (a truncation or PCA variant projects its base's: rule project_queries).
    input:
        queries=config["queries"] or [],
        # Only for the order: no model job starts before the corpus passed preflight
        # (a changed chunks file re-encodes the queries too; see rules/preflight.smk).
        preflight=PREFLIGHT,
        model_files=local_model_files,
        # backend onnx / openvino: the exported graph (rule export_backend)
        export=exported_graph,
    output:
        queries=QUERY_VECTORS,
        provenance=provenance_of(QUERY_VECTORS),
    log:
        "results/logs/encode_queries/{model}.log",
    wildcard_constraints:
        model=any_of(ENCODING_MODELS),
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=model_gpus,
    params:
        model=query_vector_params,
        runtime=embed_runtime_params,
    script:
        "../scripts/encode_queries.py"
