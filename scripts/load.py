"""Rule `load` (rules/load.smk): the logic is in embedflow.load."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.load import run

run(snakemake)
