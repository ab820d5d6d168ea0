"""Rule `train_head` (rules/variants.smk): the logic is in embedflow.train_head."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import train_head

train_head.run(snakemake)
