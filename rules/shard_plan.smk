checkpoint shard_plan:
    # The corpus cut into windows and shards by content (embedflow.shards), once
    # for every model. A checkpoint: rule gather asks for one part per shard, and
    # the shards are known only once the chunks were read.
    input:
        chunks=config["chunks"],
        # What rule preflight left out (on_bad_chunk: skip); it also orders this job after it.
        rejected=REJECTED,
    output:
        plan=SHARD_PLAN,
        provenance=provenance_of(SHARD_PLAN),
    log:
        "results/logs/shard_plan.log",
    conda:
        "../envs/preflight.yaml"
    params:
        selection=selection_params,
        # Window and shard sizes: how the work is cut, not what it makes (the
        # gathered file is the same whatever the shard count). Untracked (see
        # embed_runtime_params in common.smk): a change applies when the plan is
        # next made, i.e. when the corpus changes, or at once with
        # --forcerun shard_plan.
        runtime=lambda w, resources: canonical_json(
            {
                "window_rows": config["embed"]["window_rows"],
                "shard_rows": config["embed"]["shard_rows"],
            }
        ),
    script:
        "../scripts/shard_plan.py"
