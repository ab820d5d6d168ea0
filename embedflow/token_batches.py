"""Batches built by a token budget (a model's ``max_batch_tokens``), not a count of texts.

``SentenceTransformer.encode`` sorts the texts of one call by their length in characters
and cuts the sorted list into batches of ``batch_size`` texts: a batch of 32 signatures of
20 tokens keeps a GPU as idle as a batch of 32 sections of 2,000 tokens fills it. Here the
texts of a window are sorted by their length in tokens (the prompt and truncation
included), and each batch takes as many texts as fit a budget of padded tokens
(its longest length × its count): short texts go in large batches, long ones in small
ones, and a text longer than the budget goes alone.

Each batch then goes through the model exactly as ``encode`` sends one: the model's own
``preprocess`` (the prompt, truncation, padding) and its forward pass. The lengths come
from the tokenization the encoder already does to count over-long texts, so the budget
costs no tokenization more than fixed batches do.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Positions of the texts, longest first, grouped so that each batch's longest
    length × its count stays within ``max_batch_tokens`` (a longer text: a batch of its own).
    Equal lengths keep their order, so the batches are the same on every run."""
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda position: -lengths[position])
    batches: list[list[int]] = []
    for position in order:
        # Longest first: a batch's first text is its longest, so it sets the padded width.
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_batch_tokens:
            batches[-1].append(position)
        else:
            batches.append([position])
    return batches


def padded_tokens(batches: list[list[int]], lengths: Sequence[int]) -> int:
    """Tokens the model computes over these batches, padding included."""
    return sum(max(lengths[position] for position in batch) * len(batch) for batch in batches)


def encode_in_token_batches(model, texts: list[str], prompt: str | None, lengths: Sequence[int],
                            max_batch_tokens: int):
    """The sentence embeddings of ``texts`` (a float32 tensor on the model's device, rows in
    the order of ``texts``), computed batch by batch as ``SentenceTransformer.encode`` does."""
    import torch
    from sentence_transformers.util import batch_to_device

    device = model.device
    result: torch.Tensor | None = None
    for batch in token_budget_batches(lengths, max_batch_tokens):
        # prompt None: no prompt (encode() would put the model's default one in its place).
        features = batch_to_device(model.preprocess([texts[i] for i in batch], prompt=prompt or None), device)
        embeddings = model(features)["sentence_embedding"]
        if model.truncate_dim:
            embeddings = embeddings[..., : model.truncate_dim]
        if result is None:
            result = torch.empty((len(texts), embeddings.shape[-1]), dtype=torch.float32, device=device)
        result[torch.tensor(batch, device=device)] = embeddings.float()
    if result is None:  # no texts
        dim = model.truncate_dim or model.get_embedding_dimension()
        result = torch.empty((0, dim), dtype=torch.float32, device=device)
    return result
