# Embeds a corpus of SDK documentation chunks with sentence-transformers models,
# keeps the vectors as Parquet in several precisions, with provenance for every
# file. See README.md; the contract between stages is docs/design.md. Each rule
# has its own file in rules/, its script in scripts/ and its logic in embedflow/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/preflight.smk"
include: "rules/export_backend.smk"
include: "rules/shard_plan.smk"
include: "rules/embed.smk"
include: "rules/gather.smk"
include: "rules/fit_pca.smk"
include: "rules/project.smk"
include: "rules/train_head.smk"
include: "rules/convert.smk"
include: "rules/probe.smk"
include: "rules/measure.smk"
include: "rules/verify.smk"
include: "rules/load.smk"
include: "rules/index.smk"
include: "rules/encode_queries.smk"
include: "rules/evaluate.smk"
include: "rules/eval_summary.smk"
include: "rules/sweep.smk"
include: "rules/decision.smk"


onstart:
    # The database this run needs, reached before its first job; never on a dry run.
    check_this_run()


rule all:
    default_target: True
    input:
        all_targets(),
        evaluation_targets(),
