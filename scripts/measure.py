"""Rule `measure` (rules/measure.smk): the logic is in embedflow.verify.measure."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.verify.measure import run

run(snakemake)
