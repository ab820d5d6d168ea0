"""Rule `gather` (rules/gather.smk): the logic is in embedflow.gather."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.gather import run

run(snakemake)
