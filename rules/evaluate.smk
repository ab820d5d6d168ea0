rule evaluate:
    # Quality, size and speed of one model × precision: exactly, and through the index.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        report=ancient(rules.verify.output.report),
        queries=config["queries"] or [],
        query_vectors=rules.encode_queries.output.queries,
        # Through pgvector too, when pgvector can store this precision.
        index=lambda w: (
            INDEXED.format(**w) if w.precision in LOADABLE_PRECISIONS else []
        ),
    output:
        report=EVALUATION,
        provenance=provenance_of(EVALUATION),
    log:
        "results/logs/evaluate/{model}_{precision}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        evaluation=canonical_json(
            {
                "index": index_settings(),
                "rerank_candidates": config["index"]["rerank_candidates"],
            }
        ),
        # The table's name, also for int8 (not loaded: evaluate reads it only
        # where an index is among its inputs); table_for refuses int8.
        table=lambda w: table_name(config["database"]["table"], w.model, w.precision),
        database=database_params,
    script:
        "../scripts/evaluate.py"
