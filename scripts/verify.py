"""Rule `verify` (rules/verify.smk): the logic is in embedflow.verify."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.verify import run

run(snakemake)
