rule index:
    # Builds the ANN index after the load; a changed setting rebuilds the index only.
    input:
        loaded=rules.load.output.marker,
    output:
        marker=INDEXED,
        provenance=provenance_of(INDEXED),
    log:
        "results/logs/index/{model}_{precision}.log",
    localrule: DATABASE_RULES_RUN_LOCALLY
    conda:
        "../envs/database.yaml"
    params:
        table=table_for,
        database=database_params,
        index=index_params,
        # Build memory and workers change speed, not the index: untracked (see
        # embed_runtime_params in common.smk).
        build=lambda w, resources: canonical_json(
            {k: config["index"][k] for k in INDEX_BUILD_KEYS}
        ),
        # When a kept index's recall is measured again: untracked too (the index is the same).
        recall=lambda w, resources: canonical_json(
            {"remeasure_above": config["index"]["remeasure_recall_above"]}
        ),
    script:
        "../scripts/index.py"
