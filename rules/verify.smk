rule probe:
    # The model work verify needs, once per model: probe queries, a few chunks
    # encoded again, and with an adapter the same texts with it disabled.
    input:
        parquet=embeddings_path("{model}", "float32"),
        chunks=config["chunks"],
        model_files=local_model_files,
    output:
        probes=PROBES,
        provenance=provenance_of(PROBES),
    log:
        "results/logs/probe/{model}.log",
    conda:
        "../envs/probe.yaml"
    threads: config["embed"]["threads"]
    resources:
        gpu=1,
    params:
        model=probe_model_params,
        probes=probe_params,
        runtime=embed_runtime_params,
    script:
        "../scripts/probe.py"


rule measure:
    # Reads one embeddings file (streamed) and measures everything verify
    # judges, on the CPU: integrity, decode and drift against float32,
    # neighbours, the spot check.
    input:
        parquet=embeddings_path("{model}", "{precision}"),
        provenance=provenance_of(embeddings_path("{model}", "{precision}")),
        reference=verify_reference,
        embed_provenance=provenance_of(embeddings_path("{model}", "float32")),
        chunks=config["chunks"],
        probes=PROBES,
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
        sampling=measure_params,
        runtime=measure_runtime_params,
    script:
        "../scripts/measure.py"


rule verify:
    # Judges the measurements against the thresholds. A failing check fails
    # the job (findings in the log, no report), so nothing downstream runs.
    input:
        measures=MEASURES,
    output:
        report=VERIFY_REPORT,
        markdown=report(
            VERIFY_MARKDOWN,
            caption="../report/verify.rst",
            category="Verify",
            labels={"model": "{model}", "precision": "{precision}"},
        ),
        report_provenance=provenance_of(VERIFY_REPORT),
        markdown_provenance=provenance_of(VERIFY_MARKDOWN),
    log:
        "results/logs/verify/{model}_{precision}.log",
    conda:
        "../envs/verify.yaml"
    params:
        thresholds=verify_params,
    script:
        "../scripts/verify.py"
