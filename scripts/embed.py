"""Rule `embed` (rules/embed.smk): the logic is in embedflow.embed."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.embed import run

run(snakemake)
