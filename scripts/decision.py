"""Rule `decision` (rules/decision.smk): the logic is in embedflow.decision.report."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.decision.report import run

run(snakemake)
