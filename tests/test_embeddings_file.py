"""The Parquet contract: schema, metadata, and writes that are all or nothing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedflow.embeddings_file import (
    EmbeddingsMetadata,
    EmbeddingsWriter,
    iter_batches,
    read_ahead,
    read_all,
    read_metadata,
    rows_at,
)
from embedflow.atomic import remove_stale_temporaries
from embedflow.errors import InputError

META = EmbeddingsMetadata(
    model="m", model_source="bundled:x", dim=16, precision="float32", normalized=True,
    compute_precision="float32", text_field="content", corpus_sha256="0" * 64,
)


def write(path, batches=3, rows=5):
    with EmbeddingsWriter(path, META) as writer:
        for b in range(batches):
            ids = [f"{b}-{r}" for r in range(rows)]
            writer.write(ids, np.full((rows, 16), b, dtype=np.float32), ["h"] * rows)


def test_row_groups_schema_and_metadata(tmp_path):
    path = tmp_path / "e.parquet"
    write(path)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3
    assert str(parquet.schema_arrow.field("embedding").type) == "fixed_size_list<element: float>[16]"
    assert parquet.metadata.row_group(0).column(1).compression == "ZSTD"
    assert read_metadata(path) == META
    meta, batch = read_all(path)
    assert batch.ids[:2] == ["0-0", "0-1"] and batch.vectors.shape == (15, 16)
    assert sum(len(b.ids) for b in iter_batches(path, batch_rows=4)) == 15


def test_failure_mid_write_leaves_no_file(tmp_path):
    path = tmp_path / "e.parquet"
    with pytest.raises(RuntimeError):
        with EmbeddingsWriter(path, META) as writer:
            writer.write(["a"], np.zeros((1, 16), np.float32), ["h"])
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_a_previous_file_survives_a_failed_rewrite(tmp_path):
    path = tmp_path / "e.parquet"
    write(path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        with EmbeddingsWriter(path, META) as writer:
            writer.write(["a"], np.zeros((1, 8), np.float32), ["h"])  # wrong width
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    import pyarrow.parquet as parquet_module

    real_write = parquet_module.ParquetWriter.write_table
    calls = {"n": 0}

    def failing_write(self, table, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, table, **kwargs)

    monkeypatch.setattr(parquet_module.ParquetWriter, "write_table", failing_write)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path / "e.parquet")
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from embedflow.embeddings_file import EmbeddingsWriter
from test_embeddings_file import META
writer = EmbeddingsWriter(sys.argv[1], META).__enter__()
writer.write(["a"], np.ones((1, 16), np.float32), ["h"])
print("writing", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temporary_is_removed_even_while_its_pid_lives_on_as_a_zombie(tmp_path):
    # Where nothing reaps orphans (a container whose pid 1 is no init), a killed job's pid
    # stays "alive" to kill(pid, 0); its flock died with it, so its temporary is stale.
    path = tmp_path / "e.parquet"
    tests = os.path.dirname(__file__)
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])})
    try:
        assert child.stdout.readline() == "writing\n"
        deadline = time.time() + 30
        while not _dead_unreaped(child.pid) and time.time() < deadline:
            time.sleep(0.01)
        assert _dead_unreaped(child.pid)
        os.kill(child.pid, 0)  # no error: by its pid the killed writer is still running
        [left] = tmp_path.glob(".e.parquet.*.tmp")
        write(path)
        assert not left.exists() and not list(tmp_path.glob(".*.tmp"))
        assert read_all(path)[1].ids[:2] == ["0-0", "0-1"]
    finally:
        child.wait()


def _dead_unreaped(pid: int) -> bool:
    """Every thread of ``pid`` has exited, and nothing has reaped it yet (it waits for wait()).
    The leader shows "Z" while pyarrow's threads may still be exiting with the process's files
    open, its flock still held: only once the leader is the last task are the files closed."""
    with open(f"/proc/{pid}/stat") as stat:
        state = stat.read().rsplit(")", 1)[1].split()[0]
    return state == "Z" and os.listdir(f"/proc/{pid}/task") == [str(pid)]


def test_a_live_writers_temporary_is_kept(tmp_path):
    path = tmp_path / "e.parquet"
    with EmbeddingsWriter(path, META) as writer:
        writer.write(["a"], np.ones((1, 16), np.float32), ["h"])
        assert remove_stale_temporaries(path) == []  # its flock is held, whatever its pid
        assert list(tmp_path.glob(".e.parquet.*.tmp"))
    assert read_all(path)[1].ids == ["a"] and not list(tmp_path.glob(".*.tmp"))


def test_missing_metadata_is_named(tmp_path):
    import pyarrow as pa

    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"]}), path)
    with pytest.raises(Exception, match="plain.parquet: Parquet metadata has no 'model'"):
        read_metadata(path)


def test_rows_at_reads_the_rows_at_their_numbers_across_row_groups(tmp_path):
    path = tmp_path / "e.parquet"
    with EmbeddingsWriter(path, META) as writer:
        for b in range(4):
            ids = [f"{b}-{r}" for r in range(5)]
            writer.write(ids, np.arange(b * 80, b * 80 + 80, dtype=np.float32).reshape(5, 16), [f"h{b}{r}" for r in range(5)])
    _, everything = read_all(path)
    numbers = [0, 4, 5, 13, 19]
    found = list(rows_at(path, numbers))
    assert [row[0] for row in found] == numbers
    assert [row[1] for row in found] == [everything.ids[n] for n in numbers]
    assert [row[3] for row in found] == [everything.hashes[n] for n in numbers]
    assert np.array_equal(np.stack([row[2] for row in found]), everything.vectors[numbers])
    with pytest.raises(InputError, match="has 20 rows, no row 20"):
        list(rows_at(path, [3, 20]))


def test_read_ahead_gives_every_item_raises_the_producers_error_and_stops_when_closed():
    import threading
    import time

    assert list(read_ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken batch")

    with pytest.raises(ValueError, match="broken batch"):
        list(read_ahead(failing()))
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    ahead = read_ahead(endless(), depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
    assert len(produced) <= 3 + 2 + 1
    # closed while the producer, done, waits to say so on a full queue: it must not wait for good
    finite = read_ahead(iter(range(3)), depth=2)
    assert next(finite) == 0
    deadline = time.monotonic() + 10
    while not (finite_thread := [t for t in threading.enumerate() if t.name == "read-ahead"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the producer has put 1 and 2 and is offering the end
    closer = threading.Thread(target=finite.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "closing waited for a producer blocked on a full queue"
    assert finite_thread and not finite_thread[0].is_alive()
