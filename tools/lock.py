"""Regenerate constraints.txt: the whole dependency tree, pinned, from pyproject.toml's pins.

    python3.11 tools/lock.py          # regenerate constraints.txt
    python tools/lock.py --check      # in an installed venv: is what is installed the lock?

installs the project with its test extra into a fresh virtual environment in a temporary
folder and writes what `pip freeze` finds there, so the lock is exactly what a new user's
`pip install -e ".[test]"` resolves today. Standard library only: it needs nothing that the
install itself does not bring. --check (.ci/run uses it) fails when the running environment
holds a distribution that the lock lacks or pins at another version: a stale lock.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"
PROJECT = "embedflow"
# CUDA-only distributions: torch's CPU build needs none, so one in the tree means torch came
# from somewhere else than the CPU file and the lock would not be the tree we test.
CUDA_ONLY = re.compile(r"^(nvidia-|triton\b)", re.I)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^+\s]+)(\+\S+)?$")

HEADER = """\
# Every distribution that `pip install -e ".[test]"` installs, pinned: the whole tree under
# pyproject.toml's direct pins. Install through it:  pip install -c constraints.txt -e ".[test]"
# Generated, do not edit: change pyproject.toml, then run  python3.11 tools/lock.py
# (a fresh venv in a temporary folder, pip install -e ".[test]", pip freeze --all --exclude-editable).
# Resolved with {python}, pip {pip}, on {platform}, with torch's CPU build. Local version
# labels (torch's +cpu) are dropped so the same pins admit the CUDA build of the same release.
"""


def run(*command: str, capture: bool = False) -> str:
    done = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout if capture else ""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def frozen_pins(python: str) -> list[str]:
    """`name==version` of every distribution in the venv but the project and pip itself.

    --all keeps setuptools, which torch needs at run time; pip is the installer, not part of
    the tree (the header names its version)."""
    pins = []
    for line in run(python, "-m", "pip", "freeze", "--all", "--exclude-editable", capture=True).splitlines():
        match = PIN.match(line.strip())
        if match is None:
            raise SystemExit(f"tools/lock.py: unexpected line in pip freeze: {line!r}")
        name, version, _local = match.groups()
        if canonical(name) not in (PROJECT, "pip"):
            pins.append(f"{name}=={version}")
    cuda = [pin for pin in pins if CUDA_ONLY.match(pin)]
    if cuda:
        raise SystemExit(f"tools/lock.py: CUDA-only packages in the tree {cuda}: torch is not the CPU build")
    return sorted(pins, key=lambda pin: canonical(pin.split("==")[0]))


def lock_pins() -> dict[str, str]:
    lines = LOCK.read_text().splitlines()
    pins = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonical(name): version for name, version in pins}


def check_installed() -> None:
    """Exit non-zero unless every distribution of this environment is locked at its version."""
    from importlib import metadata

    installed = {canonical(dist.metadata["Name"]): dist.version.split("+")[0] for dist in metadata.distributions()}
    checked = {name: version for name, version in installed.items() if name not in (PROJECT, "pip")}
    locked = lock_pins()
    wrong = {
        name: (version, locked.get(name, "not locked"))
        for name, version in sorted(checked.items())
        if not CUDA_ONLY.match(name) and locked.get(name) != version
    }
    if wrong:
        raise SystemExit(
            f"constraints.txt is stale, {{name: (installed, locked)}}: {wrong}\nregenerate: python3.11 tools/lock.py"
        )
    print(f"tools/lock.py: all {len(checked)} installed distributions are locked at their versions", file=sys.stderr)


def write_lock(interpreter: str) -> None:
    with tempfile.TemporaryDirectory(prefix="embedflow-lock-") as workdir:
        run(interpreter, "-m", "venv", f"{workdir}/venv")
        python = f"{workdir}/venv/bin/python"
        run(python, "-m", "pip", "install", "--no-input", "-e", f"{REPO}[test]")
        pins = frozen_pins(python)
        facts = {
            "python": run(python, "-c", "import platform; print('CPython', platform.python_version())", capture=True),
            "pip": run(python, "-c", "import pip; print(pip.__version__)", capture=True),
            "platform": run(python, "-c", "import sysconfig; print(sysconfig.get_platform())", capture=True),
        }
    LOCK.write_text(HEADER.format(**{key: value.strip() for key, value in facts.items()}) + "\n".join(pins) + "\n")
    print(f"wrote {LOCK.relative_to(REPO)}: {len(pins)} pins", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.11", help="interpreter for the venv (default: python3.11)")
    parser.add_argument("--check", action="store_true", help="check the running environment against the lock")
    args = parser.parse_args()
    if args.check:
        check_installed()
    else:
        write_lock(args.python)


if __name__ == "__main__":
    main()
