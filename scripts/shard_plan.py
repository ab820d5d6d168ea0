"""Rule `shard_plan` (rules/shard_plan.smk): the logic is in embedflow.shard_plan."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.shard_plan import run

run(snakemake)
