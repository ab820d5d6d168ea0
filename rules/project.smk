# A truncation or PCA variant runs no model: its corpus, query and probe vectors
# are its base's, reduced, then re-normalized (embedflow.projection), so its
# three files get the same treatment and cost a pass over the base's files.


rule project:
    # The base's float32 corpus vectors.
    input:
        parquet=base_float32,
        projection=projection_file,
    output:
        parquet=unless_configured("float32", embeddings_path("{model}", "float32")),
        provenance=unless_configured(
            "float32", provenance_of(embeddings_path("{model}", "float32"))
        ),
    log:
        "results/logs/project/{model}.log",
    wildcard_constraints:
        model=any_of(PROJECTED_MODELS),
    conda:
        "../envs/convert.yaml"
    params:
        model=model_output_params,
    script:
        "../scripts/project.py"


rule project_queries:
    # The base's query vectors (rule encode_queries).
    input:
        parquet=base_query_vectors,
        projection=projection_file,
    output:
        parquet=QUERY_VECTORS,
        provenance=provenance_of(QUERY_VECTORS),
    log:
        "results/logs/project_queries/{model}.log",
    wildcard_constraints:
        model=any_of(PROJECTED_MODELS),
    conda:
        "../envs/convert.yaml"
    params:
        model=query_vector_params,
    script:
        "../scripts/project.py"


rule project_probes:
    # The base's probes (rule probe): its probe queries and re-encoded chunks, the
    # variant's first float32 rows too, since project keeps the base's order.
    input:
        probes=base_probes,
        projection=projection_file,
    output:
        probes=PROBES,
        provenance=provenance_of(PROBES),
    log:
        "results/logs/project_probes/{model}.log",
    wildcard_constraints:
        model=any_of(PROJECTED_MODELS),
    conda:
        "../envs/convert.yaml"
    params:
        model=query_encoder_params,
    script:
        "../scripts/project.py"
