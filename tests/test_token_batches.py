"""Token-budget batches (a model's max_batch_tokens): how they are built, and that the
vectors equal sentence-transformers' encode() in the texts' own order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedflow.encoder import load_encoder
from embedflow.token_batches import padded_tokens, token_budget_batches
from test_encoder import spec


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=80), st.integers(1, 1000))
def test_each_batch_keeps_to_the_budget_and_every_text_is_in_one(lengths, budget):
    batches = token_budget_batches(lengths, budget)
    assert sorted(position for batch in batches for position in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[position] for position in batch)
        assert longest * len(batch) <= budget or len(batch) == 1  # a text over the budget goes alone
        assert lengths[batch[0]] == longest  # the first of a batch sets its padded width
    flat = [lengths[position] for batch in batches for position in batch]
    assert flat == sorted(flat, reverse=True)  # sorted across the whole window, longest first


def test_short_texts_share_large_batches_and_a_text_over_the_budget_goes_alone():
    lengths = [10, 500, 12, 11, 10, 10, 90, 10]
    batches = token_budget_batches(lengths, 100)
    assert batches == [[1], [6], [2, 3, 0, 4, 5, 7]]  # equal lengths keep their order
    assert padded_tokens(batches, lengths) == 500 + 90 + 12 * 6


def test_a_budget_below_one_token_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        token_budget_batches([3], 0)


# Lengths from a few tokens to past max_seq_length (64 in tiny_model): signatures, docstrings, and
# sections cut short, so that the budget makes batches of very different sizes.
WORDS = "open the file and read its text then sort a list in place return the path as a string".split()
TEXTS = [
    f"text {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))
    for i, words in enumerate([3, 60, 9, 4, 25, 95, 2, 18, 5, 40, 12, 3, 140, 6, 30, 8])
]


@pytest.mark.parametrize("prompt, truncate_dim", [(None, None), ("passage: ", 16)])
def test_vectors_equal_encode_in_the_texts_order(tiny_model, prompt, truncate_dim):
    encoder = load_encoder("t", spec(tiny_model, max_batch_tokens=100, truncate_dim=truncate_dim), "cpu", False)
    lengths = encoder.token_lengths(TEXTS, prompt or "")
    sizes = sorted({len(batch) for batch in token_budget_batches(lengths, 100)})
    assert sizes[0] == 1 and sizes[-1] >= 6, sizes  # a text over half the budget alone, short ones many
    assert encoder.truncated_texts > 0  # some texts were cut at max_seq_length

    vectors = encoder.encode(TEXTS, prompt, batch_size=4)
    expected = encoder.model.encode(TEXTS, prompt=prompt or "", batch_size=4, normalize_embeddings=True)
    assert vectors.shape == expected.shape == (len(TEXTS), truncate_dim or 32)
    cosines = np.sum(vectors * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99999, cosines
    # Every row is its own text's: no two texts' vectors are this close.
    assert np.max(vectors @ expected.T - np.eye(len(TEXTS)) * 2, axis=1).max() < 0.99999


def test_no_texts_give_no_rows(tiny_model):
    encoder = load_encoder("t", spec(tiny_model, max_batch_tokens=64), "cpu", False)
    assert encoder.encode([], None, batch_size=4).shape[0] == 0
