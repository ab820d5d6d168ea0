"""Rule `probe` (rules/probe.smk): the logic is in embedflow.probe."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.probe import run

run(snakemake)
