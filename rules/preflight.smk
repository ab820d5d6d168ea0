rule preflight:
    # The inputs, checked once on the CPU before the first model job
    # (embedflow.preflight). The rules after it take its outputs as ancient():
    # it orders them, and its own rerun (a new policy, pairs or queries file)
    # reruns nothing else.
    input:
        chunks=config["chunks"],
        queries=config["queries"] or [],
        pairs=PAIRS_FILES,
    output:
        report=PREFLIGHT,
        rejected=REJECTED,
        provenance=provenance_of(PREFLIGHT),
        rejected_provenance=provenance_of(REJECTED),
    log:
        "results/logs/preflight.log",
    conda:
        "../envs/preflight.yaml"
    params:
        corpus=canonical_json(
            {
                "text_field": config["text_field"],
                "on_bad_chunk": config["on_bad_chunk"],
            }
        ),
        adapters=canonical_json(ADAPTERS),
        # The disk estimate's view of the config: an estimate, untracked (see
        # embed_runtime_params in common.smk).
        plan=lambda w, resources: preflight_plan(),
    script:
        "../scripts/preflight.py"
