"""Rule `fit_pca` (rules/variants.smk): the logic is in embedflow.project."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow import project

project.run_fit_pca(snakemake)
