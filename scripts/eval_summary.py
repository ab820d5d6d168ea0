"""Rule `eval_summary` (rules/eval_summary.smk): the logic is in embedflow.eval_summary."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.eval_summary import run

run(snakemake)
