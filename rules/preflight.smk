rule preflight:
    # The corpus, validated once on the CPU before the first model job
    # (embedflow.preflight). Its input and tracked param are ones every rule
    # after it that reads the corpus has too, so it reruns only when they do;
    # encode_queries waits for it only for the order, and re-encodes when the
    # chunks change. No ancient(): Snakemake 9 skips the own checks of an
    # ancient input's consumers when its producer reruns.
    input:
        chunks=config["chunks"],
    output:
        report=PREFLIGHT,
        rejected=REJECTED,
        records=RECORDS,
        provenance=provenance_of(PREFLIGHT),
        rejected_provenance=provenance_of(REJECTED),
        records_provenance=provenance_of(RECORDS),
    log:
        "results/logs/preflight.log",
    conda:
        "../envs/preflight.yaml"
    params:
        text_field=config["text_field"],
        # Untracked (see embed_runtime_params in common.smk): under fail a bad chunk
        # made nothing, so a switch changes no output; onstart holds a run to fail
        # when preflight rejected chunks (embedflow.onstart).
        on_bad_chunk=lambda w, resources: config["on_bad_chunk"],
        # The disk estimate's view of the config: an estimate, untracked.
        plan=lambda w, resources: preflight_plan(),
    script:
        "../scripts/preflight.py"
