"""Rule `train_head` (rules/train_head.smk): the logic is in embedflow.train_head."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.train_head import run

run(snakemake)
