"""Stage ``train_head``: a projection head trained on (query, passage) pairs.

The head is ``Dense(d -> k, bias=False)`` + ``Normalize`` appended to the base
model's modules (after a ``Normalize`` when the base has none, so that the head
sees the unit vectors the base's files hold), trained with
sentence-transformers' ``MultipleNegativesRankingLoss`` (in-batch negatives),
seeded, and saved with ``SentenceTransformer.save`` as a folder that rule
``embed`` then loads like any model.

With the backbone frozen (the default) the base model encodes every pair's
texts once and the head trains on those vectors: the same loss, without a
forward pass of the backbone per step. ``unfreeze_backbone`` trains the whole
model (float32 weights, autocast to the compute precision on CUDA).

The loss on all pairs (fixed batches, no shuffling) is measured before and
after training and recorded in the log and the provenance.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from embedflow import encoder as encoders
from embedflow.errors import InputError
from embedflow.pairs_file import Pairs, read_pairs  # noqa: F401  (read_pairs: part of this stage's API)
from embedflow.provenance import Timer, torch_device_info, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.device_slots import run_model_rule
from embedflow.snakemake_rule import params_json

log = logging.getLogger(__name__)


def batches_without_duplicates(keys: list[str], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of pair positions, shuffled when ``rng`` is given, where no passage appears twice
    (a repeated passage would be its own in-batch negative)."""
    order = list(range(len(keys)))
    if rng is not None:
        rng.shuffle(order)
    batches: list[list[int]] = []
    waiting = order
    while waiting:
        batch, seen, deferred = [], set(), []
        for position in waiting:
            if len(batch) < batch_size and keys[position] not in seen:
                batch.append(position)
                seen.add(keys[position])
            else:
                deferred.append(position)
        batches.append(batch)
        waiting = deferred
    return [batch for batch in batches if len(batch) > 1]  # one pair has no negative


@dataclass
class TrainingResult:
    model: object
    input_dim: int
    loss_before: float
    loss_after: float
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0


def head_modules(model, input_dim: int, dim: int, seed: int):
    """The modules appended to the base: [Normalize] + Dense(bias=False) + Normalize."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    torch.manual_seed(seed)
    modules = [] if isinstance(model[-1], Normalize) else [Normalize()]
    return modules + [Dense(input_dim, dim, bias=False, activation_function=None), Normalize()]


def _head_forward(head, vectors):
    features = {"sentence_embedding": vectors}
    for module in head:
        features = module(features)
    return features["sentence_embedding"]


def train_projection_head(encoder: encoders.Encoder, pairs: Pairs, settings: dict, spec: dict) -> TrainingResult:
    """Append a head to the encoder's model and train it; returns the whole trained model."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = encoder.model
    input_dim = encoder.dim
    if settings["dim"] >= input_dim:
        raise InputError(f"projection_head.dim {settings['dim']} must be below the base's {input_dim} dims")
    frozen = not settings["unfreeze_backbone"]
    if frozen:  # the vectors the base's own files hold, encoded once
        cached = [
            torch.from_numpy(encoder.encode(texts, spec.get(prompt), spec["batch_size"])).to(encoder.device)
            for texts, prompt in ((pairs.queries, "query_prompt"), (pairs.passages, "document_prompt"))
        ]
        model.requires_grad_(False)
    head = head_modules(model, input_dim, settings["dim"], settings["seed"])
    for module in head:
        model.append(module.to(encoder.device))
    head_params = [p for module in head for p in module.parameters()]
    loss = MultipleNegativesRankingLoss(model, scale=settings["scale"])

    if frozen:
        def step_loss(positions: list[int]):
            index = torch.tensor(positions, device=encoder.device)
            columns = [_head_forward(head, vectors[index]) for vectors in cached]
            return loss.compute_loss_from_embeddings(columns, None)

        groups = [{"params": head_params, "lr": settings["learning_rate"]}]
    else:
        step_loss = _full_model_losses(model, loss, pairs, spec, encoder)
        head_ids = {id(p) for p in head_params}
        groups = [
            {"params": head_params, "lr": settings["learning_rate"]},
            {"params": [p for p in model.parameters() if id(p) not in head_ids],
             "lr": settings["backbone_learning_rate"]},
        ]
    optimizer = torch.optim.AdamW(groups)
    rng = random.Random(settings["seed"])
    fixed = batches_without_duplicates(pairs.keys, settings["batch_size"], None)
    if not fixed:
        raise InputError("no batch of two different passages could be formed from the pairs")

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            values = [float(step_loss(batch)) for batch in fixed]
        return sum(values) / len(values)

    loss_before = evaluate()
    log.info("loss on all %d pairs before training: %.4f", len(pairs.queries), loss_before)
    epoch_losses, steps = [], 0
    for epoch in range(1, settings["epochs"] + 1):
        model.train(not frozen)  # a frozen backbone keeps eval mode (no dropout)
        values = []
        for batch in batches_without_duplicates(pairs.keys, settings["batch_size"], rng):
            optimizer.zero_grad(set_to_none=True)
            value = step_loss(batch)
            value.backward()
            optimizer.step()
            values.append(float(value.detach()))
            steps += 1
        epoch_losses.append(sum(values) / len(values))
        log.info("epoch %d/%d: mean training loss %.4f (%d steps)", epoch, settings["epochs"], epoch_losses[-1], len(values))
    loss_after = evaluate()
    log.info("loss on all %d pairs after training: %.4f (before: %.4f)", len(pairs.queries), loss_after, loss_before)
    model.eval()
    model.requires_grad_(True)
    return TrainingResult(model, input_dim, loss_before, loss_after, epoch_losses, steps)


def _full_model_losses(model, loss, pairs: Pairs, spec: dict, encoder):
    """Each step tokenizes its batch and runs the whole model (backbone trained too)."""
    import torch
    from sentence_transformers.util import batch_to_device

    model.to(torch.float32)  # trainable weights stay float32; CUDA steps autocast
    autocast_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(spec["compute_precision"])
    use_autocast = autocast_dtype is not None and encoder.device.startswith("cuda")

    def features(texts: list[str], prompt: str | None):
        # prompt handling as in encode(): prepended, with its length known to the pooling
        return batch_to_device(model.preprocess(texts, prompt=prompt or None), encoder.device)

    def step_loss(positions: list[int]):
        columns = [
            features([pairs.queries[i] for i in positions], spec.get("query_prompt")),
            features([pairs.passages[i] for i in positions], spec.get("document_prompt")),
        ]
        with torch.autocast("cuda", dtype=autocast_dtype, enabled=use_autocast):
            return loss(columns, None)

    return step_loss


def main(snakemake) -> None:
    timer = Timer()
    base = params_json(snakemake, "base")
    variant = params_json(snakemake, "variant")
    runtime = params_json(snakemake, "runtime")
    spec = {**base, **runtime["model"]}
    selection = params_json(snakemake, "selection")
    skip = rejected_positions(snakemake.input.rejected)
    pairs = read_pairs(snakemake.input.pairs, snakemake.input.chunks, selection["text_field"], skip)
    log.info("%d training pairs from %s", len(pairs.queries), snakemake.input.pairs)
    encoders.set_threads(snakemake.threads)
    # The head trains on the torch base: an exported graph has no gradients. Its own export
    # (backend onnx / openvino) is made from the trained folder afterwards.
    loading = {**spec, "backend": "torch", "quantization": None}
    if variant["unfreeze_backbone"] and spec["compute_precision"] in ("float16", "bfloat16"):
        loading = {**loading, "compute_precision": "float32"}  # trained weights stay float32; steps autocast
    encoder = encoders.load_encoder(variant["base"], loading, runtime["device"], runtime["require_cuda"])
    result = train_projection_head(encoder, pairs, variant, spec)
    output = Path(snakemake.output.folder)
    result.model.save(str(output))
    write_provenance(
        output,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"base": base, "variant": variant, "selection": selection,
                "runtime (does not change the output)": runtime},
        inputs=[snakemake.input.pairs, snakemake.input.chunks],
        timing=timer.stop().record(result.steps, unit="steps"),
        device={**torch_device_info(encoder.device), "compute_precision": encoder.compute_precision},
        model=encoder.identity,
        extra={"training": {
            "pairs": len(pairs.queries),
            "loss": "MultipleNegativesRankingLoss",
            "head": f"Dense({result.input_dim} -> {variant['dim']}, bias=False) + Normalize",
            "backbone": "trained" if variant["unfreeze_backbone"] else "frozen",
            "loss_before": round(result.loss_before, 6),
            "loss_after": round(result.loss_after, 6),
            "epoch_losses": [round(value, 6) for value in result.epoch_losses],
            "steps": result.steps,
        }},
    )


def run(snakemake) -> None:
    run_model_rule(snakemake, main)
