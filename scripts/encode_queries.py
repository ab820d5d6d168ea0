"""Rule `encode_queries` (rules/evaluate.smk): the logic is in embedflow.encode_queries."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import encode_queries

encode_queries.run(snakemake)
