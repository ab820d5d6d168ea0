"""A sentence-transformers folder of Qwen3-Embedding's shape with random weights, built offline.

For benchmarks/gpu_check.py. The layout is the published Qwen3-Embedding-4B repository's: the
transformer at the root, ``1_Pooling`` (last token), ``2_Normalize``, left padding. The
tokenizer is a word-level ``tokenizers`` model over the words of benchmarks/_sdk_texts.py
that appends Qwen's ``<|endoftext|>`` to each text, as Qwen's tokenizer does (words it does
not know are one token each): no download, and a text's length in tokens is what the
generator made it. Random weights compute as fast as trained ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from _sdk_texts import vocabulary

QWEN3_EMBEDDING_4B = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=128, intermediate_size=9728, vocab_size=151665)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=128, vocab_size=None)  # None: the tokenizer's
EOS = "<|endoftext|>"


def build_tokenizer(folder: Path, max_seq_length: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, "<unk>": 1, **{word: i + 2 for i, word in enumerate(vocabulary())}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token=EOS, pad_token=EOS,
                                        padding_side="left", model_max_length=max_seq_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(folder: Path, shape: dict, max_seq_length: int, device: str) -> dict:
    """A Qwen3-Embedding-style sentence-transformers folder with random weights; its shape facts."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_tokenizer(folder, max_seq_length)
    shape = {**shape, "vocab_size": shape["vocab_size"] or len(tokenizer)}
    config = Qwen3Config(**shape, max_position_embeddings=max(max_seq_length, 4096), pad_token_id=0,
                         eos_token_id=0, bos_token_id=0)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16 on the device: fast, half the memory
    try:
        with torch.device(device):
            backbone = Qwen3Model(config)
    finally:
        torch.set_default_dtype(default_dtype)
    linear = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Linear))
    total = sum(p.numel() for p in backbone.parameters())
    backbone.save_pretrained(folder)
    del backbone
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(folder / "config_sentence_transformers.json",
               {"prompts": {"query": "Instruct: Given a query, retrieve relevant passages\nQuery:", "document": ""},
                "default_prompt_name": None, "similarity_fn_name": "cosine"})
    write_json(folder / "1_Pooling" / "config.json",
               {"word_embedding_dimension": shape["hidden_size"], "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": True, "include_prompt": True})
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return {**shape, "linear_params": linear, "params": total, "embedding_params": total - linear}


def significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def text_flops(n: int, shape: dict) -> float:
    attention = 2 * shape["num_hidden_layers"] * shape["num_attention_heads"] * shape["head_dim"] * n * n
    return 2 * shape["linear_params"] * n + attention
