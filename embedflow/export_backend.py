"""Stage ``export_backend``: a model's graph for backend onnx or openvino.

Reads the model folder (bundled, local, or the hub's local cache: no network for a local
folder) and writes ``results/backends/<model>/`` (embedflow.backends.export): the graph in
sentence-transformers' layout and names, and ``export.json`` with the source's identity,
the settings, the package versions and every file's sha256. Its provenance sits beside it.
"""

from __future__ import annotations

import logging

from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)


def _main(snakemake) -> None:
    from embedflow import encoder as encoders
    from embedflow.backends.export import export_model

    timer = Timer()
    spec = params_json(snakemake, "export")
    key = snakemake.wildcards.model
    encoders.set_threads(snakemake.threads)
    source = encoders.resolve_source(spec["source"])
    identity = encoders.model_identity(spec, source, adapter_applied=False)
    manifest = export_model(key, spec, snakemake.output.folder, identity)
    timer.stop()
    log.info("model %s: wrote %s (%s) in %.1f s", key, snakemake.output.folder, manifest["graph_file"],
             timer.seconds)
    write_provenance(
        snakemake.output.folder,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"export": spec},
        inputs=list(snakemake.input.model_files),
        timing=timer.record(),
        model=identity,
        extra={"export": {key: manifest[key] for key in ("graph_file", "graph_inputs", "opset", "calibration",
                                                          "software", "files_sha256")}},
    )


def run(snakemake) -> None:
    """Rule ``export_backend``."""
    run_rule(snakemake, _main)
