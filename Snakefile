# Embeds a corpus of SDK documentation chunks with sentence-transformers models,
# keeps the vectors as Parquet in several precisions, with provenance for every
# file. See README.md; the contract between stages is in DESIGN.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/embed.smk"
include: "rules/variants.smk"
include: "rules/convert.smk"
include: "rules/verify.smk"
include: "rules/load.smk"
include: "rules/index.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        evaluation_targets(),
