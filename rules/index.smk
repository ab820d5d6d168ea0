rule index:
    # Builds the ANN index after the load; a changed setting rebuilds the index only.
    input:
        loaded=LOADED,
    output:
        marker=INDEXED,
        provenance=provenance_of(INDEXED),
    log:
        "results/logs/index/{model}_{precision}.log",
    conda:
        "../envs/database.yaml"
    params:
        table=table_for,
        database=database_params,
        index=index_params,
        build=index_build_params,
    script:
        "../scripts/index.py"
