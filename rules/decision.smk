rule decision:
    # Which configuration to serve: every swept candidate against the budgets, at
    # the target size. A budget or target_rows change reruns this rule only.
    input:
        sweeps=expand(
            SWEEP, model=sorted(config["models"]), precision=LOADABLE_PRECISIONS
        ),
        evaluations=expand(
            EVALUATION, model=sorted(config["models"]), precision=config["precisions"]
        ),
    output:
        markdown=report(
            f"{DECISION}.md",
            caption="../report/decision.rst",
            category="Evaluation",
        ),
        json=f"{DECISION}.json",
        pareto=report(
            PLOT.format(name="decision_pareto"),
            caption="../report/decision_pareto.rst",
            category="Evaluation",
        ),
        provenance=[
            provenance_of(path)
            for path in (
                f"{DECISION}.md",
                f"{DECISION}.json",
                PLOT.format(name="decision_pareto"),
            )
        ],
    log:
        "results/logs/decision.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        decision=canonical_json(
            {
                "target_rows": config["decision"]["target_rows"],
                "budget": {
                    k: float(v) for k, v in config["decision"]["budget"].items()
                },
                "bootstrap": config["decision"]["bootstrap"],
            }
        ),
    script:
        "../scripts/decision.py"
