"""Shards: cut by content, embedded one job each, gathered into the same file whatever their count."""

from __future__ import annotations

import json

import pytest

from conftest import example_chunks, write_chunks
from embedflow.embed import EmbedSettings
from embedflow.embed_shard import embed_shard
from embedflow.errors import InputError
from embedflow.gather import gather_parts
from embedflow.shard_plan import make_plan
from embedflow.shards import content_cuts, plan_shards, read_plan, resolve_shard_rows

SELECTION = {"text_field": "content"}


def names(ids: list[str], window_rows: int = 16, shard_rows: int = 64) -> list[str]:
    return [shard.name for shard in plan_shards(((i, "0" * 64) for i in ids), window_rows, shard_rows)]


def test_an_insertion_or_an_edit_renames_only_the_shards_around_it():
    ids = [f"chunk-{i}" for i in range(3000)]
    before = names(ids)
    assert 30 <= len(before) <= 70
    for edited in (["new", *ids], ids[:1500] + ["new"] + ids[1500:], ids[:700] + ids[701:]):
        after = names(edited)
        assert len(set(before) - set(after)) <= 2, "an edit moved cuts far from it"


def test_windows_do_not_depend_on_the_shard_size():
    ids = [f"chunk-{i}" for i in range(2000)]
    windows = {rows: [w for shard in plan_shards(((i, "0" * 64) for i in ids), 16, rows) for w in shard.windows]
               for rows in (16, 64, 500, 5000)}
    assert len({tuple(w) for w in windows.values()}) == 1
    assert all(8 <= size <= 32 for size in windows[16][:-1])  # half to twice window_rows


def test_cut_sizes_stay_between_half_and_twice_the_target():
    sizes = content_cuts(range(0, 10_000 * 7919, 7919), 100)
    assert min(sizes[:-1]) >= 50 and max(sizes) <= 200 and sum(sizes) == 10_000


def test_auto_shard_rows_grow_in_powers_of_two():
    assert resolve_shard_rows("auto", 350) == 16_384  # the bundled example: one shard
    assert resolve_shard_rows("auto", 10_000_000) == 262_144  # 39 shards or so
    assert resolve_shard_rows(100, 10) == 100
    with pytest.raises(InputError, match="shard_rows"):
        resolve_shard_rows(0, 10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    chunks = example_chunks(80)
    return write_chunks(tmp_path_factory.mktemp("shards") / "chunks.json", chunks)


def shard_rows_for(corpus, count: int) -> int:
    """A shard size that cuts this corpus into ``count`` shards (window_rows 2)."""
    for rows in range(2, 200):
        if len(make_plan(corpus, SELECTION, 2, rows).shards) == count:
            return rows
    raise AssertionError(f"no shard size gives {count} shards")


def embed_and_gather(corpus, folder, tiny_model, shard_rows: int) -> tuple[bytes, list]:
    plan = make_plan(corpus, SELECTION, 2, shard_rows)
    settings = EmbedSettings("tiny", {"source": str(tiny_model), "normalize": True, "compute_precision": "float32"},
                             device="cpu", batch_size=3, cache_path=None)  # every window encoded
    parts, results = [], []
    for shard in plan.shards:
        part = folder / f"{shard.name}.parquet"
        results.append(embed_shard(corpus, plan, shard, part, settings))
        parts.append(part)
    output = folder / "embeddings_tiny_float32.parquet"
    assert gather_parts(plan, parts, output) == 80
    return output.read_bytes(), results


def test_the_gathered_file_is_the_same_bytes_for_1_3_and_7_shards(corpus, tmp_path, tiny_model):
    files = {}
    for count in (1, 3, 7):
        folder = tmp_path / f"shards-{count}"
        files[count], results = embed_and_gather(corpus, folder, tiny_model, shard_rows_for(corpus, count))
        assert len(results) == count and sum(r.cache["texts_encoded"] for r in results) == 80
    assert files[1] == files[3] == files[7]

    from embedflow.embeddings_file import read_all

    meta, rows = read_all(tmp_path / "shards-7" / "embeddings_tiny_float32.parquet")
    assert rows.ids == [chunk["id"] for chunk in example_chunks(80)]  # input order
    assert meta.corpus_sha256 == make_plan(corpus, SELECTION, 4, 8).corpus["sha256"]


def test_a_shard_of_a_stale_plan_is_refused_before_the_model_loads(corpus, tmp_path):
    plan = make_plan(corpus, SELECTION, 4, 16)
    chunks = json.loads(corpus.read_text())
    chunks[0]["content"] += " (edited)"
    edited = write_chunks(tmp_path / "chunks.json", chunks)
    settings = EmbedSettings("tiny", {"source": "/nonexistent"}, device="cpu", cache_path=None)
    with pytest.raises(InputError, match=f"shard {plan.shards[0].name} .* changed after the plan"):
        embed_shard(edited, plan, plan.shards[0], tmp_path / "part.parquet", settings)
    assert not (tmp_path / "part.parquet").exists()


def test_a_plan_reads_back_as_written(corpus, tmp_path):
    from embedflow.atomic import write_json

    plan = make_plan(corpus, {"text_field": "content", "max_chunks": 30, "sample": "random", "seed": 1}, 4, 12)
    write_json(tmp_path / "plan.json", plan.to_json())
    assert read_plan(tmp_path / "plan.json") == plan
    assert sum(shard.rows for shard in plan.shards) == 30 and len(plan.positions) == 30


# --- resume: a killed job keeps the windows it finished ---------------------------------

KILLED_JOB = """
import sys
from embedflow.cache.store import Namespace
from embedflow.embed import EmbedSettings
from embedflow.embed_shard import embed_shard
from embedflow.shard_plan import make_plan

corpus, cache, output, model, stop = sys.argv[1:]
put, written = Namespace.put, []


def put_and_tell(self, *args, **kwargs):
    # the real put, then a line on stdout per window kept; after `stop` of them, wait to be killed
    path = put(self, *args, **kwargs)
    written.append(path)
    print(len(written), flush=True)
    if len(written) == int(stop):
        sys.stdin.read()
    return path


Namespace.put = put_and_tell
plan = make_plan(corpus, {"text_field": "content"}, 4, 10_000)
settings = EmbedSettings("tiny", {"source": model, "normalize": True, "compute_precision": "float32"},
                         device="cpu", batch_size=3, cache_path=cache)
embed_shard(corpus, plan, plan.shards[0], output, settings)
"""


def test_a_killed_embed_job_resumes_from_the_windows_it_finished(corpus, tmp_path, tiny_model):
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    plan = make_plan(corpus, SELECTION, 4, 10_000)
    [shard] = plan.shards
    assert len(shard.windows) >= 10
    done_windows = len(shard.windows) // 2
    part = tmp_path / "part.parquet"
    args = [str(corpus), str(tmp_path / "cache"), str(part), str(tiny_model), str(done_windows)]
    job = subprocess.Popen([sys.executable, "-c", KILLED_JOB, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for expected in range(1, done_windows + 1):
            assert job.stdout.readline() == f"{expected}\n"  # window `expected` is in the cache
        job.send_signal(signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
    finally:
        job.kill()
        job.wait()
    assert not part.exists()  # nothing half-written

    def settings(cache):
        return EmbedSettings("tiny", {"source": str(tiny_model), "normalize": True, "compute_precision": "float32"},
                             device="cpu", batch_size=3, cache_path=str(cache))

    resumed = embed_shard(corpus, plan, shard, part, settings(tmp_path / "cache"))
    unfinished = sum(shard.windows[done_windows:])
    assert resumed.cache["texts_encoded"] == unfinished  # the texts the model received
    assert resumed.cache["rows_reused"] == 80 - unfinished
    whole = tmp_path / "uninterrupted.parquet"
    embed_shard(corpus, plan, shard, whole, settings(tmp_path / "fresh-cache"))
    assert part.read_bytes() == whole.read_bytes()
