"""Rule `fit_pca` (rules/fit_pca.smk): the logic is in embedflow.fit_pca."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.fit_pca import run

run(snakemake)
