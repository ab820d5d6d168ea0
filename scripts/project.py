"""Rules `project`, `project_queries` and `project_probes` (rules/project.smk): the logic is in embedflow.project."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the workflow's own package

from embedflow.project import run

run(snakemake)
