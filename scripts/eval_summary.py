"""Rule `eval_summary` (rules/evaluate.smk): the logic is in embedflow.summary."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import summary

summary.run(snakemake)
