rule load:
    # One table per model × precision: the changed rows applied in place, or a new
    # table built with its index and swapped in, atomically. Moving a verify
    # threshold reruns verify but not this (the report is ancient()): a passing
    # report must exist, but reloading millions of rows for it would be waste.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        chunks=config["chunks"],
        rejected=REJECTED,
        # the records' places and hashes: a diff load parses only the records it writes
        records=RECORDS,
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
        # How the table is loaded, not what it holds (a diff or a full load with its index
        # built first, the same index the index rule builds): untracked, like index.smk's build.
        serving=lambda w, resources: canonical_json(
            {
                "index": index_settings(),
                "build": {k: config["index"][k] for k in INDEX_BUILD_KEYS},
                "full_reload_above": config["database"]["full_reload_above"],
            }
        ),
    script:
        "../scripts/load.py"
