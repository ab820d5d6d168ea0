"""Token counts with the model's own tokenizer, without torch: the ``tokenizers`` library
reads the model folder's ``tokenizer.json`` (what transformers' fast tokenizer loads).

``embedflow plan`` counts the tokens a run will encode; embed counts those it
encoded, so that the throughput it records (tokens per model-second) and the
plan's estimate use one count. A text is counted as the model sees it: prompt
included, cut at ``max_seq_length`` (the spec's, else the folder's
``sentence_bert_config.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedflow.identity import model_folder

# Texts tokenized at once: the tokenizer runs them in parallel, memory stays small.
SLICE = 4096


@dataclass
class TokenCounter:
    tokenizer: object
    prompt: str
    max_length: int | None

    def count(self, texts: list[str]) -> int:
        total = 0
        for start in range(0, len(texts), SLICE):
            batch = [self.prompt + text for text in texts[start : start + SLICE]]
            for encoding in self.tokenizer.encode_batch(batch):
                length = len(encoding.ids)
                total += min(length, self.max_length) if self.max_length else length
        return total


def token_counter(spec: dict) -> TokenCounter | None:
    """A counter for the model of ``spec``; None when its folder has no tokenizer.json (a hub
    model not downloaded yet, an http model)."""
    if (spec.get("backend") or "torch") == "http":
        return None
    folder = model_folder(spec)
    path = _tokenizer_file(folder) if folder else None
    if path is None:
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return TokenCounter(tokenizer, spec.get("document_prompt") or "", spec.get("max_seq_length") or _max_length(folder))


def _tokenizer_file(folder: Path) -> Path | None:
    direct = folder / "tokenizer.json"
    if direct.is_file():
        return direct
    found = sorted(folder.glob("*/tokenizer.json"))  # a module's own folder (0_Transformer/)
    return found[0] if found else None


def _max_length(folder: Path) -> int | None:
    try:
        return json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError):
        return None
