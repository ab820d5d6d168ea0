from embedflow.config import verify_slice


rule verify:
    # Judges the measurements against the thresholds. A failing check fails
    # the job (findings in the log, no report), so nothing downstream runs.
    input:
        measures=rules.measure.output.measures,
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
        # Only the thresholds: moving one reruns the judging, not the measuring.
        thresholds=lambda w: canonical_json(
            verify_slice(config, model_spec(w), w.precision)
        ),
    script:
        "../scripts/verify.py"
