rule export_backend:
    # A model's Transformer module as an ONNX or OpenVINO graph (float32, or int8 with
    # quantization: int8), once per model with backend onnx or openvino, on the CPU.
    # Every job that encodes with the model reads it (embedflow.backends); a torch model
    # has no export. A truncation or PCA variant runs its base's export.
    input:
        model_files=local_model_files,
    output:
        folder=directory(BACKEND_FOLDER),
        provenance=provenance_of(BACKEND_FOLDER),
    log:
        "results/logs/export_backend/{model}.log",
    wildcard_constraints:
        model=any_of(EXPORTED_MODELS),
    conda:
        "../envs/embed.yaml"
    threads: config["embed"]["threads"]
    resources:
        # It loads the torch model to export it, so one model job at a time, as the others.
        gpu=1,
    params:
        # What changes the graph: source, revision, remote code, backend, quantization,
        # and the versions of what writes and runs it (an upgrade makes it again).
        export=lambda w: canonical_json(export_slice(MODELS[w.model])),
        runtime=lambda w: canonical_json(runtime_versions(MODELS[w.model])),
    script:
        "../scripts/export_backend.py"
