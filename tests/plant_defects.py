"""Plant known defects in a copy of the repository and show that the suite catches each.

    python tests/plant_defects.py            # every defect
    python tests/plant_defects.py --only oid # one, by name

For each defect: copy the tracked files to a temporary folder, make one small
edit that breaks a promise (the edit must apply exactly once), run the tests
that guard that promise in the copy, and expect them to FAIL. Then the same
tests must pass on the unedited copy, so a red is the defect's doing. Not part
of the suite (it runs the guarded tests twice per defect: minutes); run by hand
after changing a guard, and quote its output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Defect:
    name: str
    promise: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


DEFECTS = (
    Defect(
        "gpu",
        "model jobs never share the GPU",
        "rules/embed.smk",
        "    resources:\n        gpu=1,\n",
        "",
        (
            "tests/test_workflow_planning.py::test_model_jobs_never_share_the_gpu",
            "tests/test_workflow_static.py::test_exactly_the_rules_that_run_a_model_claim_a_gpu",
        ),
    ),
    Defect(
        "oid",
        "embedflow check reports a table replaced behind the workflow's back",
        "embedflow/check.py",
        'if live["oid"] != marker["oid"]:',
        "if False:",
        ("tests/test_check.py::test_each_kind_of_drift_is_reported_and_the_rerun_repairs_exactly_it[replaced table]",),
    ),
    Defect(
        "index-definition",
        "embedflow check reports a changed index definition",
        "embedflow/check.py",
        'if row[0] != marker["definition"]:',
        "if False:",
        ("tests/test_check.py::test_each_kind_of_drift_is_reported_and_the_rerun_repairs_exactly_it[index definition]",),
    ),
    Defect(
        "provenance",
        "verify fails a file whose provenance does not match it",
        "embedflow/verify/file_checks.py",
        'return none_of("provenance", len(problems),',
        'return none_of("provenance", 0,',
        ("tests/test_verify_defects.py::test_provenance_fails_on_a_file_that_is_not_the_one_recorded",),
    ),
    Defect(
        "params",
        "a changed test-mode seed reruns what embedded the sample (the key dropped from embed's params)",
        "embedflow/config.py",
        'selection["seed"] = test_mode["seed"]',
        "pass",
        ("tests/test_change_matrix.py::test_change_matrix_reruns_exactly_what_is_stale",),
    ),
    Defect(
        "duplicate-id",
        "validation refuses a duplicate chunk id",
        "embedflow/chunks.py",
        "            if earlier != place.position:\n                raise ChunkError(",
        "            if False:\n                raise ChunkError(",
        ("tests/test_chunks.py::test_bad_file_is_rejected_with_a_precise_message",),
    ),
)


def copy_repo(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def plant(root: Path, defect: Defect) -> None:
    path = root / defect.file
    text = path.read_text()
    count = text.count(defect.old)
    if count != 1:
        raise SystemExit(f"{defect.name}: expected the text once in {defect.file}, found it {count} times")
    path.write_text(text.replace(defect.old, defect.new))


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, time.perf_counter() - started, lines[-1] if lines else done.stderr[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run only this defect (repeatable)")
    args = parser.parse_args()
    chosen = [d for d in DEFECTS if not args.only or d.name in args.only]
    caught = 0
    for defect in chosen:
        with tempfile.TemporaryDirectory(prefix=f"defect-{defect.name}-") as folder:
            root = Path(folder)
            copy_repo(root)
            clean, clean_seconds, clean_line = run_tests(root, defect.tests)
            plant(root, defect)
            passed, seconds, line = run_tests(root, defect.tests)
        verdict = "CAUGHT" if clean and not passed else ("NOT CAUGHT" if passed else "GUARD RED WITHOUT DEFECT")
        caught += verdict == "CAUGHT"
        print(f"{verdict:<10} {defect.name}: {defect.promise}")
        print(f"           planted in {defect.file}; guards: {', '.join(defect.tests)}")
        print(f"           without the defect: {clean_line} ({clean_seconds:.0f} s)")
        print(f"           with the defect:    {line} ({seconds:.0f} s)")
    print(f"{caught} of {len(chosen)} defects caught")
    sys.exit(0 if caught == len(chosen) else 1)


if __name__ == "__main__":
    main()
