"""Rule `index` (rules/index.smk): the logic is in embedflow.index."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.index import run

run(snakemake)
