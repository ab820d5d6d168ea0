"""Encoders for backends ``onnx`` and ``openvino``: the exported graph in place of the network.

The model is loaded as for torch (sentence-transformers: tokenizer, prompts, length sorting,
pooling, Dense / Normalize modules, truncate_dim), then its Transformer module's network is
replaced by a runner of the graph that rule export_backend wrote (ONNX Runtime or OpenVINO,
on the CPU, float32 or int8). Everything around the network stays sentence-transformers'
own code, so a backend changes exactly one thing: how the token embeddings are computed.
The returned object is an ``embedflow.encoder.Encoder`` like torch's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedflow.backends import backend_of, export_key, graph_file
from embedflow.errors import UserError
from embedflow.paths import BACKEND_FOLDER

log = logging.getLogger(__name__)


def export_folder(key: str, spec: dict) -> Path:
    """Where the model's graph is: results/backends/<model> (a spec's ``export_folder``, set by
    tests and benchmarks, overrides it)."""
    return Path(spec.get("export_folder") or BACKEND_FOLDER.format(model=export_key(key, spec)))


def cpu_device(key: str, spec: dict, device_policy: str, require_cuda: bool) -> str:
    backend = backend_of(spec)
    if require_cuda or device_policy.startswith("cuda"):
        raise UserError(
            f"model {key}: backend {backend} runs on the CPU (the CPU builds of ONNX Runtime and OpenVINO are "
            f"installed), but embed.device is {device_policy!r}"
            f"{' with require_cuda' if require_cuda else ''}; use backend torch on a GPU"
        )
    return "cpu"


def onnx_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda arrays: session.run(None, arrays)[0]


def openvino_runner(path: Path, threads: int):
    import openvino as ov

    # f32 explicitly: on CPUs with bf16 or AMX OpenVINO would otherwise compute in bfloat16.
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda arrays: request.infer(arrays)[output]


def graph_network(network_config, run, names: list[str]):
    """A torch module standing where the Transformer module's network was: the same config,
    the graph's ``last_hidden_state`` out."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class GraphNetwork(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = network_config
            # sentence-transformers reads the model's device from its first tensor
            self.register_buffer("device_anchor", torch.zeros(0), persistent=False)

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            arrays = {name: given[name].cpu().numpy() for name in names}
            return BaseModelOutput(last_hidden_state=torch.from_numpy(run(arrays)))

    return GraphNetwork().eval()


def load_exported_encoder(key: str, spec: dict, device_policy: str, require_cuda: bool):
    import torch

    from embedflow.backends.export import check_exported, graph_sha256
    from embedflow.encoder import Encoder, _variant_projection, load_torch_model, model_identity, resolve_source

    backend = backend_of(spec)
    device = cpu_device(key, spec, device_policy, require_cuda)
    folder = export_folder(key, spec)
    manifest = check_exported(folder, spec, key)
    source = resolve_source(spec["source"])
    threads = torch.get_num_threads()
    model = load_torch_model(spec, source, device)
    transformer = model[0]
    path = folder / graph_file(spec)
    run = (onnx_runner if backend == "onnx" else openvino_runner)(path, threads)
    transformer.model = graph_network(transformer.model.config, run, manifest["graph_inputs"])
    model.eval()
    dim = model.get_embedding_dimension()
    projection = _variant_projection(key, spec, dim)
    log.info(
        "model %s: backend %s%s, graph %s (%d threads), dimension %d%s, max_seq_length %s",
        key, backend, f" {spec['quantization']}" if spec.get("quantization") else "", path, threads, dim,
        f" (truncated to {spec['truncate_dim']})" if spec.get("truncate_dim") else "", model.max_seq_length,
    )
    identity = model_identity(spec, source, adapter_applied=False)
    identity["export"] = {
        "folder": str(folder),
        "graph_file": graph_file(spec),
        "graph_sha256": graph_sha256(manifest, graph_file(spec)),
        "calibration": manifest["calibration"],
        "software": manifest["software"],
    }
    return Encoder(
        model=model,
        key=key,
        device=device,
        compute_precision="float32",
        tf32=False,
        dim=dim if projection is None else projection.dim,
        normalize=spec["normalize"],
        max_seq_length=model.max_seq_length,
        identity=identity,
        projection=projection,
    )
