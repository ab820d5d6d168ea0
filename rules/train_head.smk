rule train_head:
    # Dense(d -> k) + Normalize on the base model, MultipleNegativesRankingLoss on
    # pairs; the saved folder then embeds the corpus like any model (rule embed).
    input:
        pairs=lambda w: variant_of(w)["pairs"],
        chunks=config["chunks"],
        rejected=REJECTED,
        model_files=lambda w: model_files_of(variant_of(w)["base"]),
    output:
        folder=directory(HEAD_FOLDER),
        provenance=provenance_of(HEAD_FOLDER),
    log:
        "results/logs/train_head/{model}.log",
    benchmark:
        "results/benchmarks/train_head/{model}.tsv"
    wildcard_constraints:
        model=any_of(MODELS_BY_WAY["projection_head"]),
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=1,
    params:
        # What changes the base's vectors, and the prompts the pairs are encoded with.
        base=head_base_params,
        variant=variant_params,
        # The pairs name their passages among all chunks: test-mode sampling never
        # changes the head.
        selection=canonical_json({"text_field": config["text_field"]}),
        # The base's batch size and the device: speed, not the head (untracked, see
        # embed_runtime_params in common.smk).
        runtime=lambda w, resources: runtime_params_of(variant_of(w)["base"]),
    script:
        "../scripts/train_head.py"
