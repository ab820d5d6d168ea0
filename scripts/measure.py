"""Rule `measure` (rules/verify.smk): the logic is in embedflow.verify."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import verify

verify.run_measure(snakemake)
