# Variants (embedflow.variants): smaller vectors from a base model, each under its
# own model key. A PCA variant's projection is fitted here, then applied by `project`.


rule fit_pca:
    # PCA (or TruncatedSVD) of a sample of the base's float32 vectors.
    input:
        parquet=base_float32,
    output:
        projection=PCA_FILE,
        provenance=provenance_of(PCA_FILE),
    log:
        "results/logs/fit_pca/{model}.log",
    wildcard_constraints:
        model=any_of(MODELS_BY_WAY["pca"]),
    conda:
        "../envs/convert.yaml"
    params:
        variant=variant_params,
    script:
        "../scripts/fit_pca.py"
