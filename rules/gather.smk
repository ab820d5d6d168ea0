rule gather:
    # The parts of a model's shards streamed into the float32 file the rest of
    # the chain reads, one window (row group) at a time; every output precision
    # is derived from it by `convert`.
    input:
        parts=shard_parts,
        part_records=shard_part_records,
        plan=SHARD_PLAN,
    output:
        parquet=unless_configured("float32", embeddings_path("{model}", "float32")),
        provenance=unless_configured(
            "float32", provenance_of(embeddings_path("{model}", "float32"))
        ),
    log:
        "results/logs/gather/{model}.log",
    wildcard_constraints:
        model=any_of(ENCODING_MODELS),
    # The embed env: the cache's identity module (what the saved plan is keyed by) can
    # resolve a hub model's files.
    conda:
        "../envs/embed.yaml"
    params:
        model=model_output_params,
        selection=selection_params,
    script:
        "../scripts/gather.py"
