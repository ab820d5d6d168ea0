"""Rule `embed` (rules/embed.smk): the logic is in embedflow.embed_shard (and embedflow.embed)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.embed_shard import run

run(snakemake)
