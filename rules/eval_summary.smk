from embedflow.variants import variant_labels


rule eval_summary:
    # One table and three plots across every model × precision.
    input:
        reports=expand(
            EVALUATION, model=sorted(config["models"]), precision=config["precisions"]
        ),
        # Its count of rejected chunks goes in the summary.
        preflight=PREFLIGHT,
    output:
        markdown=report(
            f"{SUMMARY}.md",
            caption="../report/eval_summary.rst",
            category="Evaluation",
        ),
        csv=f"{SUMMARY}.csv",
        quality_vs_bytes=report(
            PLOT.format(name="quality_vs_bytes"),
            caption="../report/quality_vs_bytes.rst",
            category="Evaluation",
        ),
        quality_vs_latency=report(
            PLOT.format(name="quality_vs_latency"),
            caption="../report/quality_vs_latency.rst",
            category="Evaluation",
        ),
        quality_vs_dim=report(
            PLOT.format(name="quality_vs_dim"),
            caption="../report/quality_vs_dim.rst",
            category="Evaluation",
        ),
        # One provenance record per file it writes.
        provenance=provenance_of(f"{SUMMARY}.md"),
        provenance_csv=provenance_of(f"{SUMMARY}.csv"),
        provenance_bytes=provenance_of(PLOT.format(name="quality_vs_bytes")),
        provenance_latency=provenance_of(PLOT.format(name="quality_vs_latency")),
        provenance_dim=provenance_of(PLOT.format(name="quality_vs_dim")),
    log:
        "results/logs/eval_summary.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        # Which model keys are variants of which base, and how: labels for the summary.
        variants=canonical_json(variant_labels(MODELS)),
    script:
        "../scripts/eval_summary.py"
