"""Variants of a model (Matryoshka truncation, PCA, a trained projection head): their
configuration. The numbers are in test_fit_pca.py, test_projection.py and test_train_head.py;
the example's variants, run by Snakemake, in test_workflow_variants.py."""

from __future__ import annotations

import pytest

from embedflow.errors import ConfigError
from embedflow.variants import check_models, resolve

BASE = {"source": "bundled:all-MiniLM-L6-v2", "normalize": True, "adapter": None, "truncate_dim": None}


# --- configuration --------------------------------------------------------------------


def test_a_variant_resolves_to_its_bases_settings_changed_by_its_way():
    models = {
        "base": {**BASE, "query_prompt": "q: "},
        "trunc": {"base": "base", "truncate_dim": 64},
        "pca": {"base": "base", "pca": {"dim": 32, "sample_rows": 100, "center": True, "seed": 0}},
        "head": {"base": "base", "projection_head": {
            "dim": 16, "pairs": "p.jsonl", "epochs": 1, "batch_size": 4, "learning_rate": 0.01,
            "unfreeze_backbone": False, "backbone_learning_rate": 1e-5, "scale": 20.0, "seed": 0}},
    }
    check_models(models)
    assert resolve(models, "base")["variant"] is None
    trunc = resolve(models, "trunc")
    assert trunc["truncate_dim"] == 64 and trunc["query_prompt"] == "q: " and trunc["variant"]["way"] == "truncate_dim"
    pca = resolve(models, "pca")
    assert pca["source"] == BASE["source"] and pca["variant"]["path"] == "results/reduce/pca.pca.npz"
    head = resolve(models, "head")
    assert head["source"] == "results/models/head" and head["adapter"] is None and head["query_prompt"] == "q: "


@pytest.mark.parametrize("models, message", [
    ({"v": {"base": "nope", "truncate_dim": 8}}, "base 'nope' is not a key of models"),
    ({"m": BASE, "v": {"base": "m"}}, "needs exactly one of truncate_dim, pca, projection_head"),
    ({"m": BASE, "v": {"base": "m", "truncate_dim": 8, "pca": {"dim": 4}}}, "got ['truncate_dim', 'pca']"),
    ({"m": BASE, "a": {"base": "m", "truncate_dim": 8}, "b": {"base": "a", "truncate_dim": 4}}, "is itself a variant"),
    ({"m": {**BASE, "normalize": False}, "v": {"base": "m", "truncate_dim": 8}}, "has normalize: false"),
    ({"m": {**BASE, "truncate_dim": 64}, "v": {"base": "m", "truncate_dim": 64}}, "not below base 'm'"),
    ({"m": {**BASE, "truncate_dim": 64}, "v": {"base": "m", "projection_head": {"dim": 8, "pairs": "p"}}},
     "cannot sit on base 'm', which has truncate_dim"),
])
def test_bad_variants_are_refused_with_the_model_key(models, message):
    with pytest.raises(ConfigError) as error:
        check_models(models)
    assert message in str(error.value) and "models." in str(error.value)


def test_a_bad_variant_stops_planning(workflow):
    config = workflow.config
    config["models"]["small"] = {"base": "minilm", "pca": {"dim": 8}, "truncate_dim": 8}
    workflow.set_config(config)
    done = workflow.snakemake("-n", check=False)
    assert done.returncode != 0
    assert "models.small: a variant needs exactly one of" in done.stdout + done.stderr
