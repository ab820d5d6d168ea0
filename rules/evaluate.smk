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
    localrule: DATABASE_RULES_RUN_LOCALLY
    conda:
        "../envs/evaluate.yaml"
    params:
        # What this precision's evaluation reads: the index settings where pgvector
        # holds the precision, the re-rank depth for binary. int8 (Parquet only) reads
        # no index, table or database, so their settings never rerun it.
        evaluation=lambda w: canonical_json(
            {
                **(
                    {"index": index_settings()}
                    if w.precision in LOADABLE_PRECISIONS
                    else {}
                ),
                **(
                    {"rerank_candidates": config["index"]["rerank_candidates"]}
                    if w.precision == "binary"
                    else {}
                ),
            }
        ),
        table=lambda w: table_for(w) if w.precision in LOADABLE_PRECISIONS else "",
        database=lambda w: (
            database_params(w)
            if w.precision in LOADABLE_PRECISIONS
            else canonical_json(None)
        ),
    script:
        "../scripts/evaluate.py"
