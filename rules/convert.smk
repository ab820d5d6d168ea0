rule convert:
    # float32 → float16 | bfloat16 | int8 (calibrated on this corpus) | binary, on the CPU.
    input:
        parquet=embeddings_path("{model}", "float32"),
    output:
        parquet=embeddings_path("{model}", "{precision}"),
        provenance=provenance_of(embeddings_path("{model}", "{precision}")),
    log:
        "results/logs/convert/{model}_{precision}.log",
    wildcard_constraints:
        precision=any_of(DERIVED_PRECISIONS),
    conda:
        "../envs/convert.yaml"
    script:
        "../scripts/convert.py"
