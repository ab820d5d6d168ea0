"""Models: where they come from, which device and compute precision they run at,
and the encoder that turns texts into float32 vectors.

torch and sentence-transformers are imported only inside functions (here and in
``train_head``), so that planning a run (``snakemake -n``) never loads them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedflow.backends import onnx_int8_entry
from embedflow.errors import ConfigError, UserError
from embedflow.hashing import sha256_tree
from embedflow.identity import (  # re-exported: the encoder's identity lives there
    WEIGHT_SUFFIXES,
    ModelSource,
    encoder_identity,
    file_sha256,
    hub_snapshot,
    identity_key,
    resolve_source,
    weights_sha256,
)
from embedflow.projection import Projection, for_variant
from embedflow.variants import variant_record
from embedflow.token_batches import encode_in_token_batches
from embedflow.vectors import l2_normalize

log = logging.getLogger(__name__)

COMPUTE_PRECISIONS = ("float32", "tf32", "float16", "bfloat16")


# --- device and compute precision --------------------------------------------


def choose_device(policy: str, require_cuda: bool, cuda_available: bool, cuda_count: int) -> str:
    """The device for a policy (auto | cpu | cuda | cuda:N), given what the machine has."""
    if policy == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif policy == "cpu":
        device = "cpu"
    elif policy == "cuda" or policy.startswith("cuda:"):
        if not cuda_available:
            raise UserError(f"device: {policy} was asked for, but torch sees no CUDA device")
        index = int(policy.split(":", 1)[1]) if ":" in policy else 0
        if index >= cuda_count:
            raise UserError(
                f"device: {policy} was asked for, but torch sees {cuda_count} CUDA device(s)"
                " (check CUDA_VISIBLE_DEVICES)"
            )
        device = policy
    else:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {policy!r}")
    if require_cuda and not device.startswith("cuda"):
        raise UserError(
            "embed.require_cuda is true but no CUDA device is available "
            f"(device policy {policy!r}); run on a GPU node or set require_cuda: false"
        )
    return device


def resolve_device(policy: str, require_cuda: bool) -> str:
    import torch

    available = torch.cuda.is_available()
    return choose_device(policy, require_cuda, available, torch.cuda.device_count() if available else 0)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def torch_dtype(compute_precision: str):
    import torch

    if compute_precision not in COMPUTE_PRECISIONS:
        raise ConfigError(
            f"compute_precision must be one of {COMPUTE_PRECISIONS}, got {compute_precision!r}"
        )
    return {
        "float32": torch.float32,
        "tf32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[compute_precision]


def tf32_wanted(compute_precision: str, device: str) -> bool:
    """TF32 matmul applies to float32 tensors on CUDA; elsewhere it does not exist."""
    return compute_precision == "tf32" and device.startswith("cuda")


def set_tf32(enabled: bool) -> bool:
    """Switch TF32 matmul and cuDNN on or off; returns whether it is on."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return bool(torch.backends.cuda.matmul.allow_tf32)


def precision_warnings(compute_precision: str, device: str) -> list[str]:
    warnings = []
    if compute_precision == "float16" and not device.startswith("cuda"):
        warnings.append(
            "compute_precision float16 on the CPU is slow (measured here 5.8 chunks/s against 25 "
            "in float32); use bfloat16 or float32 on the CPU"
        )
    if compute_precision == "tf32" and not device.startswith("cuda"):
        warnings.append("compute_precision tf32 needs a CUDA device; computing in plain float32")
    return warnings


# --- the loaded model ---------------------------------------------------------


@dataclass
class Encoder:
    """A sentence-transformers model ready to encode, with what provenance needs to know."""

    model: object
    key: str
    device: str
    compute_precision: str
    tf32: bool
    dim: int
    normalize: bool
    max_seq_length: int
    identity: dict = field(default_factory=dict)
    truncated_texts: int = 0
    # A PCA variant's projection, applied after the base model's normalization
    # exactly as rule project applies it to the base's stored vectors.
    projection: Projection | None = None
    # Batches of this many padded tokens instead of batch_size texts (embedflow.token_batches).
    max_batch_tokens: int | None = None

    def encode(
        self, texts: list[str], prompt: str | None, batch_size: int, input_type: str = "document"
    ) -> np.ndarray:
        """Texts → float32 vectors (rows, dim), normalized in float32 when asked. Batches of
        ``batch_size`` texts, or of ``max_batch_tokens`` padded tokens when that is set.
        ``input_type`` (document | query) is for APIs that take it (backend http); a local
        model has the prompt."""
        import torch

        lengths = self.token_lengths(texts, prompt or "")
        with torch.inference_mode():
            if self.max_batch_tokens and lengths is not None:
                tensor = encode_in_token_batches(self.model, texts, prompt, lengths, self.max_batch_tokens)
            else:
                tensor = self.model.encode(
                    texts,
                    prompt=prompt or "",  # "" means no prompt, never the model's default one
                    batch_size=batch_size,
                    convert_to_tensor=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
            vectors = tensor.float().cpu().numpy()
        vectors = l2_normalize(vectors) if self.normalize else vectors
        return vectors if self.projection is None else self.projection.apply(vectors)

    def token_lengths(self, texts: list[str], prompt: str) -> list[int] | None:
        """Each text's length in tokens as the model sees it (prompt included, cut at
        max_seq_length); counts and logs the texts that were cut. None when nothing needs them
        or the model has no tokenizer."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None or not (self.max_seq_length or self.max_batch_tokens):
            return None
        lengths = _token_lengths(tokenizer, texts, prompt)
        if not self.max_seq_length:
            return lengths
        over = sum(length > self.max_seq_length for length in lengths)
        if over:
            self.truncated_texts += over
            log.warning(
                "%d text(s) in this batch exceed max_seq_length=%d tokens (longest %d) and are "
                "embedded truncated to their first %d tokens",
                over,
                self.max_seq_length,
                max(lengths),
                self.max_seq_length,
            )
        return [min(length, self.max_seq_length) for length in lengths]


# Texts tokenized at once to count over-long ones: their untruncated token ids are
# dropped after each slice, so the count costs no memory that grows with the window.
TOKEN_COUNT_SLICE = 256


def _token_lengths(tokenizer, texts: list[str], prompt: str) -> list[int]:
    lengths: list[int] = []
    for start in range(0, len(texts), TOKEN_COUNT_SLICE):
        batch = [prompt + text for text in texts[start : start + TOKEN_COUNT_SLICE]]
        lengths.extend(len(ids) for ids in tokenizer(batch, verbose=False)["input_ids"])
    return lengths


def model_identity(spec: dict, source: ModelSource, adapter_applied: bool) -> dict:
    """The provenance record of the model: where it came from, its files' sha256, and
    ``identity_key``, the key of its vectors in the cache (embedflow.identity)."""
    folder = Path(source.name_or_path) if source.kind != "hub" else hub_snapshot(
        source.name_or_path, spec.get("revision")
    )
    identity = {
        "source": spec["source"],
        "kind": source.kind,
        "name_or_path": source.name_or_path,
        "revision": spec.get("revision"),
        "resolved_revision": folder.name if source.kind == "hub" and folder else None,
        "weights_sha256": weights_sha256(folder) if folder else None,
        "adapter": None,
        "backend": spec.get("backend") or "torch",
        "quantization": spec.get("quantization"),
    }
    identity.update(onnx_int8_entry(spec))
    if spec.get("adapter"):
        identity["adapter"] = {
            "path": spec["adapter"],
            "applied": adapter_applied,
            "files_sha256": sha256_tree(spec["adapter"]),
        }
    identity["adapter_applied"] = adapter_applied
    if spec.get("variant"):
        identity["variant"] = variant_record(spec["variant"])
    identity["identity_key"] = identity_key(encoder_identity(spec))
    return identity


def _apply_adapter(model, adapter: str) -> bool:
    if not Path(adapter).is_dir():
        raise ConfigError(f"adapter folder {adapter} does not exist")
    try:
        model.load_adapter(adapter)
    except ImportError as error:
        raise UserError(f"loading adapter {adapter} needs peft: {error}") from None
    return bool(model.active_adapters())


def load_torch_model(spec: dict, source: ModelSource, device: str, dtype=None):
    """The sentence-transformers model of a spec (truncation and max_seq_length set), as torch
    loads it; rule export_backend exports its Transformer module from this too."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        source.name_or_path,
        device=device,
        revision=spec.get("revision"),
        trust_remote_code=spec.get("trust_remote_code", False),
        truncate_dim=spec.get("truncate_dim"),
        local_files_only=source.kind != "hub",
        model_kwargs={"dtype": dtype if dtype is not None else torch_dtype("float32")},
    )
    if spec.get("max_seq_length"):
        model.max_seq_length = spec["max_seq_length"]
    return model


def load_encoder(key: str, spec: dict, device_policy: str, require_cuda: bool) -> Encoder:
    """Load a model per its config spec; logs device, precision, TF32 and dimension.
    Dispatches on ``spec["backend"]`` (embedflow.backends; torch when absent): http is an API
    client, onnx and openvino run an exported graph."""
    from embedflow.backends import check_backend, is_exported

    check_backend(key, spec)
    if spec.get("backend") == "http":  # an API client (embedflow.backends.http)
        from embedflow.backends.http import load_http_encoder

        return load_http_encoder(key, spec)
    if is_exported(spec):
        from embedflow.backends.onnx import load_exported_encoder

        return load_exported_encoder(key, spec, device_policy, require_cuda)
    source = resolve_source(spec["source"])
    device = resolve_device(device_policy, require_cuda)
    compute = spec["compute_precision"]
    dtype = torch_dtype(compute)
    for message in precision_warnings(compute, device):
        log.warning(message)
    log.info("model %s: loading %s (%s) on %s", key, source.name_or_path, source.kind, device_name(device))
    model = load_torch_model(spec, source, device, dtype)
    adapter_applied = _apply_adapter(model, spec["adapter"]) if spec.get("adapter") else False
    model.to(dtype)
    model.eval()
    tf32 = set_tf32(tf32_wanted(compute, device))
    dim = model.get_embedding_dimension()
    if spec.get("truncate_dim") and spec["truncate_dim"] > dim:
        raise ConfigError(f"model {key}: truncate_dim {spec['truncate_dim']} exceeds the model's {dim} dims")
    projection = _variant_projection(key, spec, dim)
    in_effect = next(model.parameters()).dtype
    log.info(
        "model %s: compute precision %s (parameters %s), TF32 %s, dimension %d%s, "
        "max_seq_length %s, adapter %s, batches of %s",
        key,
        compute,
        str(in_effect).replace("torch.", ""),
        "on" if tf32 else "off",
        dim,
        f" (truncated to {spec['truncate_dim']})" if spec.get("truncate_dim") else "",
        model.max_seq_length,
        f"{spec['adapter']} applied" if adapter_applied else "none",
        f"{spec['max_batch_tokens']} padded tokens" if spec.get("max_batch_tokens") else f"{spec.get('batch_size')} texts",
    )
    return Encoder(
        model=model,
        key=key,
        device=device,
        compute_precision=compute,
        tf32=tf32,
        dim=dim if projection is None else projection.dim,
        normalize=spec["normalize"],
        max_seq_length=model.max_seq_length,
        identity=model_identity(spec, source, adapter_applied),
        projection=projection,
        max_batch_tokens=spec.get("max_batch_tokens"),
    )


def _variant_projection(key: str, spec: dict, model_dim: int) -> Projection | None:
    variant = spec.get("variant")
    if not variant or variant["way"] != "pca":
        return None  # truncation happens in the model (truncate_dim), a head is part of it
    projection = for_variant(variant)
    projection.check_input(model_dim, f"model {key}")
    log.info("model %s: %s of base %s applied after the model, %d -> %d dims, re-normalized",
             key, variant["path"], variant["base"], model_dim, projection.dim)
    return projection


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
