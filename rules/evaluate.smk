rule encode_queries:
    # The query set, encoded once per model with its query prompt, in float32.
    input:
        queries=config["queries"] or [],
        model_files=local_model_files,
    output:
        queries=QUERY_VECTORS,
        provenance=provenance_of(QUERY_VECTORS),
    log:
        "results/logs/encode_queries/{model}.log",
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=1,
    params:
        model=query_model_params,
        runtime=embed_runtime_params,
    script:
        "../scripts/encode_queries.py"


rule evaluate:
    # Quality, size and speed of one model × precision: exactly, and through the index.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        report=ancient(VERIFY_REPORT),
        queries=config["queries"] or [],
        query_vectors=QUERY_VECTORS,
        index=evaluation_index,
    output:
        report=EVALUATION,
        provenance=provenance_of(EVALUATION),
    log:
        "results/logs/evaluate/{model}_{precision}.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        evaluation=evaluation_params,
        table=evaluation_table,
        database=evaluation_database,
    script:
        "../scripts/evaluate.py"


rule eval_summary:
    # One table and three plots across every model × precision.
    input:
        reports=expand(
            EVALUATION, model=sorted(config["models"]), precision=config["precisions"]
        ),
    output:
        markdown=report(
            f"{SUMMARY}.md",
            caption="../report/eval_summary.rst",
            category="Evaluation",
        ),
        csv=f"{SUMMARY}.csv",
        quality_vs_bytes=report(
            "results/eval/quality_vs_bytes.png",
            caption="../report/quality_vs_bytes.rst",
            category="Evaluation",
        ),
        quality_vs_latency=report(
            "results/eval/quality_vs_latency.png",
            caption="../report/quality_vs_latency.rst",
            category="Evaluation",
        ),
        quality_vs_dim=report(
            "results/eval/quality_vs_dim.png",
            caption="../report/quality_vs_dim.rst",
            category="Evaluation",
        ),
        provenance=provenance_of(f"{SUMMARY}.md"),
    log:
        "results/logs/eval_summary.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        variants=variants_params,
    script:
        "../scripts/eval_summary.py"
