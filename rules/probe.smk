from embedflow.config import probe_slice


rule probe:
    # The model work verify needs, once per model: probe queries, a few chunks
    # encoded again, and with an adapter the same texts with it disabled (a
    # truncation or PCA variant projects its base's: rule project_probes).
    input:
        parquet=embeddings_path("{model}", "float32"),
        chunks=config["chunks"],
        rejected=REJECTED,
        model_files=local_model_files,
        # backend onnx / openvino: the exported graph (rule export_backend)
        export=exported_graph,
    output:
        probes=PROBES,
        provenance=provenance_of(PROBES),
    log:
        "results/logs/probe/{model}.log",
    wildcard_constraints:
        model=any_of(ENCODING_MODELS),
    conda:
        "../envs/probe.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=model_gpus,
    params:
        model=query_encoder_params,
        probes=canonical_json(probe_slice(config)),
        runtime=embed_runtime_params,
    script:
        "../scripts/probe.py"
