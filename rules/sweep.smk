rule sweep:
    # Every servable index x search setting of one loaded table, measured through
    # SQL on a copy of it (the workflow's table and index are never touched).
    input:
        loaded=LOADED,
        queries=config["queries"] or [],
        query_vectors=rules.encode_queries.output.queries,
    output:
        report=SWEEP,
        provenance=provenance_of(SWEEP),
    log:
        "results/logs/sweep/{model}_{precision}.log",
    localrule: DATABASE_RULES_RUN_LOCALLY
    conda:
        "../envs/evaluate.yaml"
    params:
        # What defines the candidates and their searches; not the budgets (rule decision).
        sweep=canonical_json(
            {
                "index": {
                    k: config["index"][k]
                    for k in (
                        "metric",
                        "m",
                        "ef_construction",
                        "lists",
                        "halfvec_for_large",
                        "rerank_candidates",
                    )
                },
                **{
                    k: config["decision"][k]
                    for k in ("methods", "binary_quantize", "ef_search", "probes")
                },
            }
        ),
        table=table_for,
        database=database_params,
        # Build memory and workers change speed, not the index: untracked (as in rule index).
        build=lambda w, resources: canonical_json(
            {k: config["index"][k] for k in INDEX_BUILD_KEYS}
        ),
    script:
        "../scripts/sweep.py"
