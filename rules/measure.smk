from embedflow.config import measure_slice


rule measure:
    # Reads one embeddings file (streamed) and measures everything verify
    # judges, on the CPU: integrity, decode and drift against float32,
    # neighbours, the spot check.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        provenance=provenance_of(embeddings_path("{model}", "{precision}")),
        # A derived precision is measured against the float32 file it was made from.
        # Where float32 is temp(), Snakemake keeps it until this job has run; moving
        # a threshold later reruns only `verify`, which never reads it.
        reference=lambda w: (
            [] if w.precision == "float32" else embeddings_path(w.model, "float32")
        ),
        embed_provenance=provenance_of(embeddings_path("{model}", "float32")),
        chunks=config["chunks"],
        rejected=REJECTED,
        probes=rules.probe.output.probes,
    output:
        measures=MEASURES,
        provenance=provenance_of(MEASURES),
    log:
        "results/logs/measure/{model}_{precision}.log",
    conda:
        "../envs/verify.yaml"
    threads: config["verify"]["threads"]
    params:
        model=model_output_params,
        selection=selection_params,
        sampling=canonical_json(measure_slice(config)),
        # Batch size changes memory and speed, not the report: untracked (see
        # embed_runtime_params in common.smk).
        runtime=lambda w, resources: canonical_json(
            {"batch_rows": config["verify"]["batch_rows"]}
        ),
    script:
        "../scripts/measure.py"
