"""Rule `evaluate` (rules/evaluate.smk): the logic is in embedflow.evaluate."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.evaluate import run

run(snakemake)
