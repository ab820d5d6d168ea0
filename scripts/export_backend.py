"""Rule `export_backend` (rules/export_backend.smk): the logic is in embedflow.export_backend."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.export_backend import run

run(snakemake)
