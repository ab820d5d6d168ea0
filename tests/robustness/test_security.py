"""Security promises that a reading of the code can check."""

from __future__ import annotations

import ast
import re

from conftest import REPO
from embedflow.config import load_config


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


def test_remote_code_stays_off_unless_a_model_turns_it_on(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("chunks: c.json\nmodels:\n  a: {source: x/y}\n  b: {source: x/z, trust_remote_code: true}\n"
                      "precisions: [float32]\n")
    models = load_config(config)["models"]
    assert models["a"]["trust_remote_code"] is False and models["b"]["trust_remote_code"] is True
    source = (REPO / "embedflow/encoder.py").read_text()
    assert 'trust_remote_code=spec.get("trust_remote_code", False)' in source
