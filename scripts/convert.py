"""Rule `convert` (rules/convert.smk): the logic is in embedflow.convert."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.convert import run

run(snakemake)
