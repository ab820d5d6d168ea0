"""Security promises that a reading of the code can check."""

from __future__ import annotations

import ast
import re

from conftest import REPO
from embedflow.config_file import load_config


def test_no_rule_runs_a_shell_command():
    for smk in (REPO / "rules").glob("*.smk"):
        assert not re.search(r"^\s+(shell|run):", smk.read_text(), re.M), smk.name
    assert not re.search(r"^\s+(shell|run):", (REPO / "Snakefile").read_text(), re.M)


def test_no_subprocess_goes_through_a_shell():
    for path in [*(REPO / "embedflow").glob("*.py"), *(REPO / "scripts").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    assert not (keyword.arg == "shell" and getattr(keyword.value, "value", False) is True), path
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                assert name not in ("system", "popen"), f"{path}: os.{name}"


def test_remote_code_reaches_the_model_loader_only_for_a_model_that_turns_it_on(tmp_path, monkeypatch, tiny_model):
    """What SentenceTransformer(...) is given, recorded as embed and probe call it: the config
    with its defaults, resolved as the Snakefile resolves it, through the params slice, into
    load_encoder. The recording subclass calls through to the real class: the model loads."""
    import sentence_transformers

    from embedflow.config import model_output_slice
    from embedflow.encoder import load_encoder
    from embedflow.variants import resolve

    given = []

    class Recording(sentence_transformers.SentenceTransformer):
        def __init__(self, *args, **kwargs):
            given.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recording)
    config = tmp_path / "config.yaml"
    config.write_text(f"chunks: c.json\nmodels:\n  plain: {{source: {tiny_model}}}\n"
                      f"  remote: {{source: {tiny_model}, trust_remote_code: true}}\n"
                      "  remote_trunc8: {base: remote, truncate_dim: 8}\nprecisions: [float32]\n")
    models = load_config(config)["models"]
    for key in models:
        encoder = load_encoder(key, model_output_slice(resolve(models, key)), "auto", False)
        assert isinstance(encoder.model, Recording) and encoder.encode(["a text"], None, 1).shape[0] == 1
    assert [kwargs["trust_remote_code"] for kwargs in given] == [False, True, True]
