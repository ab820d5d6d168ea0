"""Rule `preflight` (rules/preflight.smk): the logic is in embedflow.preflight."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.preflight import run

run(snakemake)
