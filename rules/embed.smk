rule embed:
    # One shard of the corpus (checkpoint shard_plan) by one model, on the GPU
    # slot the job takes (embedflow.device_slots); rule gather joins the parts.
    # The chunks file and the plan are ancient(): a corpus edit rewrites the
    # plan, and a shard whose chunks did not change keeps its name, so its part
    # is not made again. The shard's content is checked before the model loads.
    input:
        chunks=ancient(config["chunks"]),
        plan=ancient(SHARD_PLAN),
        model_files=local_model_files,
        # backend onnx / openvino: the exported graph (rule export_backend)
        export=exported_graph,
    output:
        parquet=SHARD_PART,
        provenance=provenance_of(SHARD_PART),
    log:
        "results/logs/embed/{model}/{shard}.log",
    benchmark:
        "results/benchmarks/embed/{model}/{shard}.tsv"
    wildcard_constraints:
        # Models, and variants with a trained head; the others come from rule project.
        model=any_of(ENCODING_MODELS),
        shard="[0-9a-f]{16}",
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=model_gpus,
    params:
        model=model_output_params,
        runtime=embed_runtime_params,
        # Where cached vectors are, not what they are: computed from `resources`,
        # so untracked (see embed_runtime_params in common.smk) and never a rerun.
        cache=lambda wildcards, resources: canonical_json(
            {"path": config["cache"]["path"]}
        ),
    script:
        "../scripts/embed.py"
