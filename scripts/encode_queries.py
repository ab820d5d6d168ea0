"""Rule `encode_queries` (rules/encode_queries.smk): the logic is in embedflow.encode_queries."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.encode_queries import run

run(snakemake)
