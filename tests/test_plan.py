"""``embedflow plan``: its numbers before a run are what the run then does, and it needs no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from datetime import UTC, datetime

import pytest
import yaml

from conftest import REPO, example_chunks, write_chunks
from embedflow.config_file import load_config
from embedflow.gather import plan_beside_outcome
from embedflow.cache.runs import record_throughput
from embedflow.plan import UNKNOWN, make_plan, save_plan
from test_cache import edit, embed, received  # noqa: F401  (received: the fixture)


@pytest.fixture
def setup(tmp_path, tiny_model, monkeypatch):
    """A config over 24 chunks in a temporary folder (the plan's file lands in its results/)."""
    monkeypatch.chdir(tmp_path)
    chunks = write_chunks(tmp_path / "chunks.jsonl", example_chunks(24))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "chunks": str(chunks), "models": {"tiny": {"source": str(tiny_model)}, "tiny_t": {"base": "tiny", "truncate_dim": 8}},
        "cache": {"path": "cache"}, "precisions": ["float32"], "queries": None,
    }))
    return config_path, chunks


def test_the_plan_predicts_what_embed_then_does(tmp_path, tiny_model, setup, received, monkeypatch):
    config_path, chunks = setup
    config = load_config(config_path)
    first = make_plan(config)
    tiny = first["models"]["tiny"]
    assert (tiny["chunks"], tiny["cached"], tiny["to_encode"]) == (24, 0, 24)
    assert tiny["estimate"] == UNKNOWN and first["models"]["tiny_t"]["to_encode"] == 0
    with monkeypatch.context() as patched:
        patched.setattr("embedflow.plan.TOKEN_SAMPLE", 12)  # more texts than that: a sample's count, scaled
        sampled = make_plan(config)["models"]["tiny"]
    assert sampled["tokens_estimated_from"] == 12 and 0.5 < sampled["tokens"] / tiny["tokens"] < 2
    result = embed(tmp_path, chunks, tiny_model, "before")
    assert result.cache["tokens_encoded"] == tiny["tokens"] > 24  # one tokenizer, one count
    record_throughput("cache", "tiny", result.cache)
    edited, _ = edit(example_chunks(24))
    write_chunks(chunks, edited)
    plan = make_plan(config)
    save_plan(plan)
    tiny = plan["models"]["tiny"]
    assert (tiny["chunks"], tiny["cached"], tiny["to_encode"]) == (25, 20, 5)
    assert tiny["estimate"]["seconds"] > 0 and "embed job(s) on cpu" in tiny["estimate"]["basis"]
    received.clear()
    after = embed(tmp_path, chunks, tiny_model, "after")
    assert len(received) == 5
    # As rule gather reads it from the provenance of its one shard, embedded after the plan.
    shard = {"cache": after.cache, "shard": {"rows": after.rows}, "timing": {"finished": datetime.now(UTC).isoformat()}}
    beside = plan_beside_outcome([shard], after.corpus_sha256)
    assert beside["agree"] is True and beside["outcome"] == {"cached": 20, "to_encode": 5}
    assert beside["predicted"]["planned_at"] == plan["planned_at"]


def test_the_plan_follows_test_mode_and_rejected_chunks(tmp_path, setup):
    config_path, chunks = setup
    bad = example_chunks(24)
    bad[5]["content"] = ""
    write_chunks(chunks, bad)
    config = load_config(config_path)
    config["on_bad_chunk"] = "skip"
    config["test_mode"]["max_chunks"] = 10
    plan = make_plan(config, tokens=False)
    assert plan["corpus"]["chunks"] == 23 and plan["corpus"]["rejected"] == 1
    assert plan["models"]["tiny"]["chunks"] == 10 and plan["models"]["tiny"]["tokens"] is None


def test_embedflow_plan_imports_no_torch_and_prints_json(tmp_path, setup):
    config_path, _ = setup
    script = (
        "import sys, runpy; sys.argv = ['embedflow', '--config', sys.argv[1], 'plan', '--json'];"
        "from embedflow.cli import main; code = main();"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules];"
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(config_path)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr
    plan = json.loads(done.stdout)
    assert plan["models"]["tiny"]["to_encode"] == 24 and (tmp_path / "results/plan.json").exists()
