rule load:
    # One table per model × precision, swapped in atomically. Moving a verify
    # threshold reruns verify but not this (the report is ancient()): a passing
    # report must exist, but reloading millions of rows for it would be waste.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        chunks=config["chunks"],
        rejected=REJECTED,
        report=ancient(rules.verify.output.report),
    output:
        marker=LOADED,
        provenance=provenance_of(LOADED),
    log:
        "results/logs/load/{model}_{precision}.log",
    localrule: DATABASE_RULES_RUN_LOCALLY
    conda:
        "../envs/database.yaml"
    params:
        table=table_for,
        database=database_params,
    script:
        "../scripts/load.py"
