"""embedflow.train_head: a projection head trained on query/passage pairs (a tiny random model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_chunks
from embedflow.errors import InputError


def _pairs(tmp_path, count=24):
    chunks = [{"id": f"c{i}", "content": f"topic {i}: " + " ".join(f"w{(i * 7 + j) % 50}" for j in range(12))}
              for i in range(count)]
    chunks_path = write_chunks(tmp_path / "chunks.json", chunks)
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text("".join(
        json.dumps({"query": f"w{(i * 7 + 3) % 50} w{(i * 7 + 5) % 50} topic", "positive_id": f"c{i}"}) + "\n"
        for i in range(count)
    ))
    return chunks_path, pairs_path


HEAD = {"dim": 8, "epochs": 15, "batch_size": 8, "learning_rate": 0.02, "unfreeze_backbone": False,
        "backbone_learning_rate": 1e-4, "scale": 20.0, "seed": 0}


def _tiny_spec(tiny_model):
    return {"source": str(tiny_model), "normalize": True, "compute_precision": "float32", "batch_size": 16,
            "adapter": None, "truncate_dim": None, "query_prompt": None, "document_prompt": None}


@pytest.mark.parametrize("unfreeze", [False, True], ids=["frozen", "unfrozen"])
def test_training_lowers_the_heads_loss_on_its_pairs(tmp_path, tiny_model, unfreeze):
    from embedflow.encoder import load_encoder
    from embedflow.train_head import read_pairs, train_projection_head

    chunks_path, pairs_path = _pairs(tmp_path)
    pairs = read_pairs(pairs_path, chunks_path, "content")
    spec = _tiny_spec(tiny_model)
    encoder = load_encoder("tiny", spec, "cpu", False)
    frozen_before = {name: p.detach().clone() for name, p in encoder.model.named_parameters()}
    result = train_projection_head(encoder, pairs, {**HEAD, "unfreeze_backbone": unfreeze}, spec)
    assert result.loss_after < 0.9 * result.loss_before, (result.loss_before, result.loss_after)
    assert len(result.epoch_losses) == HEAD["epochs"] and result.steps == HEAD["epochs"] * 3
    backbone_moved = any(not torch_equal(p, frozen_before[name])
                         for name, p in result.model.named_parameters() if name in frozen_before)
    assert backbone_moved == unfreeze

    # saved, it is a sentence-transformers folder that embeds like any model: k dims, unit length
    result.model.save(str(tmp_path / "head"))
    trained = load_encoder("head", {**spec, "source": str(tmp_path / "head")}, "cpu", False)
    vectors = trained.encode(pairs.passages[:4], None, 4)
    assert trained.dim == 8 and vectors.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_head_on_a_base_with_an_adapter_saves_a_folder_that_embeds_the_same(tmp_path, tiny_model, tiny_lora_adapter):
    """The saved folder keeps the adapter (sentence-transformers saves it next to the
    modules, pointing at the base), so embedding from the folder gives the trained model's vectors."""
    from embedflow.encoder import load_encoder
    from embedflow.train_head import read_pairs, train_projection_head

    chunks_path, pairs_path = _pairs(tmp_path)
    pairs = read_pairs(pairs_path, chunks_path, "content")
    spec = {**_tiny_spec(tiny_model), "adapter": str(tiny_lora_adapter)}
    encoder = load_encoder("tiny", spec, "cpu", False)
    assert encoder.identity["adapter_applied"]
    result = train_projection_head(encoder, pairs, {**HEAD, "epochs": 2}, spec)
    in_memory = result.model.encode(pairs.passages, convert_to_numpy=True, normalize_embeddings=True)
    result.model.save(str(tmp_path / "head"))
    assert (tmp_path / "head" / "adapter_config.json").exists()
    saved = load_encoder("head", {**spec, "source": str(tmp_path / "head"), "adapter": None}, "cpu", False)
    np.testing.assert_allclose(saved.encode(pairs.passages, None, 8), in_memory, atol=1e-5)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.parametrize("line, message", [
    ('{"query": "q"}', "line 2: give exactly one of 'positive_id' (a chunk id) and 'positive' (a text)"),
    ('{"query": "", "positive": "p"}', "line 2: 'query' must be a non-empty string"),
    ('{"query": "q", "positive_id": "nope"}', "line 2: positive_id 'nope' is not a chunk of"),
    ('{"query": "q", ', "line 2: not valid JSON"),
])
def test_bad_pairs_name_the_file_and_line(tmp_path, line, message):
    from embedflow.train_head import read_pairs

    chunks_path, _ = _pairs(tmp_path, count=3)
    pairs_path = tmp_path / "bad.jsonl"
    pairs_path.write_text('{"query": "fine", "positive_id": "c1"}\n' + line + "\n")
    with pytest.raises(InputError) as error:
        read_pairs(pairs_path, chunks_path, "content")
    assert str(pairs_path) in str(error.value) and message in str(error.value)


def test_batches_never_hold_one_passage_twice():
    from embedflow.train_head import batches_without_duplicates

    keys = ["a", "b", "a", "c", "a", "d", "b", "e"]
    batches = batches_without_duplicates(keys, 4, None)
    assert all(len({keys[i] for i in batch}) == len(batch) for batch in batches)
    used = sorted(i for batch in batches for i in batch)
    # the third "a" is left alone in a last batch: one pair has no negative, so it is dropped
    assert used == [0, 1, 2, 3, 5, 6, 7]
