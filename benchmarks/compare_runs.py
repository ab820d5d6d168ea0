"""Compare two runs of the workflow file by file: did a change alter any output?

    python benchmarks/compare_runs.py BEFORE/results AFTER/results

Every Parquet file must be byte-identical (sha256). Every JSON output (verify
reports and measures, evaluation reports, markers; not provenance records,
which name their own timings, commit and host by design) must be equal once
the fields that measure time or name a database object are left out: keys
ending in ``seconds``, ``per_second`` or ``_ms``, ``latency`` blocks, ``oid``
and ``commit``. An index's size in bytes is reported apart when it differs:
a parallel HNSW build (``max_parallel_maintenance_workers``, 2 by default)
inserts rows in an order that varies, and on the example's 350-row PCA table
the same statement gave 303,104 bytes in 8 of 10 builds and 311,296 in 2, on
one unchanged server. The script prints each file's verdict and the keys it
left out, and exits 1 if any other value differs or a file exists on one side
only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

VOLATILE_SUFFIXES = ("seconds", "per_second", "_ms")
VOLATILE_KEYS = {"latency", "oid", "commit"}
BUILD_DEPENDENT = {"index_bytes", "index_bytes_per_vector"}  # see the module's docstring
COMPARED = (".parquet", ".json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key in BUILD_DEPENDENT or key.endswith(VOLATILE_SUFFIXES)


def build_dependent_differences(a, b, path: str = "") -> list[str]:
    """Index sizes that differ between the two runs (reported, not failed)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in set(a) & set(b):
            if key in BUILD_DEPENDENT and a[key] != b[key]:
                found.append(f"{path}.{key}: {a[key]} vs {b[key]}")
            else:
                found += build_dependent_differences(a[key], b[key], f"{path}.{key}")
        return found
    return []


def stable(value, dropped: set[str], path: str = ""):
    """``value`` without its volatile keys; their dotted paths are added to ``dropped``."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if volatile(key):
                dropped.add(f"{path}.{key}")
            else:
                kept[key] = stable(item, dropped, f"{path}.{key}")
        return kept
    if isinstance(value, list):
        return [stable(item, dropped, f"{path}[]") for item in value]
    return value


def outputs(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix in COMPARED
        and not path.name.endswith(".provenance.json")
        and "pgdata" not in path.parts
    }


def first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                return first_difference(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} != {b!r}"


def compare(before: Path, after: Path) -> int:
    names_before, names_after = outputs(before), outputs(after)
    problems = 0
    for name in sorted(names_before ^ names_after):
        side = "before" if name in names_before else "after"
        print(f"ONLY {side:<6} {name}")
        problems += 1
    dropped: set[str] = set()
    counts = {".parquet": 0, ".json": 0}
    for name in sorted(names_before & names_after):
        a, b = before / name, after / name
        if a.suffix == ".parquet":
            same, detail = sha256(a) == sha256(b), "sha256 differs"
        else:
            raw_left, raw_right = json.loads(a.read_text()), json.loads(b.read_text())
            for difference in build_dependent_differences(raw_left, raw_right):
                print(f"BUILD {name}: {difference} (varies between HNSW builds)")
            left, right = stable(raw_left, dropped), stable(raw_right, dropped)
            same = left == right
            detail = "" if same else first_difference(left, right)
        counts[a.suffix] += 1
        if not same:
            print(f"DIFF  {name}: {detail}")
            problems += 1
    print(f"compared {counts['.parquet']} Parquet files (byte for byte) and {counts['.json']} JSON files")
    print(f"left out as volatile: {', '.join(sorted({key.rsplit('.', 1)[-1] for key in dropped})) or 'nothing'}")
    print("identical" if problems == 0 else f"{problems} difference(s)")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="results/ of the first run")
    parser.add_argument("after", type=Path, help="results/ of the second run")
    args = parser.parse_args()
    sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
