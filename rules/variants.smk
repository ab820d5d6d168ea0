# Variants: smaller vectors from a base model, each under its own model key
# (embedflow.variants). Truncation and PCA derive a variant's float32 file from
# its base's; a projection head is trained here and then embeds like any model.


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


rule project:
    # The base's float32 vectors truncated or projected, then re-normalized.
    input:
        parquet=base_float32,
        projection=pca_file_of,
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


rule train_head:
    # Dense(d -> k) + Normalize on the base model, MultipleNegativesRankingLoss on pairs.
    input:
        pairs=head_pairs,
        chunks=config["chunks"],
        model_files=base_model_files,
    output:
        folder=directory(HEAD_FOLDER),
        provenance=provenance_of(HEAD_FOLDER),
    log:
        "results/logs/train_head/{model}.log",
    benchmark:
        "results/benchmarks/train_head/{model}.tsv"
    wildcard_constraints:
        model=any_of(MODELS_BY_WAY["projection_head"]),
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=1,
    params:
        base=head_base_params,
        variant=variant_params,
        selection=head_selection_params,
        runtime=head_runtime_params,
    script:
        "../scripts/train_head.py"
