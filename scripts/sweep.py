"""Rule `sweep` (rules/sweep.smk): the logic is in embedflow.decision.sweep."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.decision.sweep import run

run(snakemake)
