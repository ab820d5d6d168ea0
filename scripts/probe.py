"""Rule `probe` (rules/verify.smk): the logic is in embedflow.probe."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import probe

probe.run(snakemake)
