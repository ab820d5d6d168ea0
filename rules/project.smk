rule project:
    # The base's float32 vectors truncated or projected, then re-normalized:
    # truncation and PCA variants need no second model pass.
    input:
        parquet=base_float32,
        projection=lambda w: (
            variant_of(w)["path"] if variant_of(w)["way"] == "pca" else []
        ),
    output:
        parquet=unless_configured("float32", embeddings_path("{model}", "float32")),
        provenance=unless_configured(
            "float32", provenance_of(embeddings_path("{model}", "float32"))
        ),
    log:
        "results/logs/project/{model}.log",
    wildcard_constraints:
        model=any_of(MODELS_BY_WAY["truncate_dim"] + MODELS_BY_WAY["pca"]),
    conda:
        "../envs/convert.yaml"
    params:
        model=model_output_params,
    script:
        "../scripts/project.py"
