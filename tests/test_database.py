"""Reaching the database: the embedded server, one reached by DSN, table names.

Loading, indexing and the drift check have their own files (test_load, test_index, test_check).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import INDEX_BUILD, REPO
from embedflow.database import DatabaseSettings, connect, describe_target
from embedflow.errors import ConfigError, UserError
from embedflow.index import IndexSettings, build_index
from embedflow.load import load_table
from embedflow.tables import table_name


@pytest.mark.parametrize("template", ['x"; DROP TABLE t_float32; --', "{model}-{precision}", "Robert'); DROP", "{nope}"])
def test_hostile_table_names_are_rejected(template):
    with pytest.raises(ConfigError, match="table"):
        table_name(template, "minilm", "float32")


def test_dsn_server_with_password_never_leaks_it(password_server, db_corpus, monkeypatch, tmp_path, caplog):
    dsn, password = password_server
    folder, chunks, _ = db_corpus
    monkeypatch.setenv("EMBEDFLOW_TEST_DSN", dsn)
    settings = DatabaseSettings(dsn_env="EMBEDFLOW_TEST_DSN")
    with caplog.at_level("DEBUG"), connect(settings) as connection:
        facts = load_table(connection, "remote_float32", folder / "embeddings_synthetic_float32.parquet", chunks)
        index = build_index(connection, "remote_float32", IndexSettings(), INDEX_BUILD)
    assert facts["rows"] == 600 and index["recall_at_10"]["recall"] > 0.8
    target = describe_target(settings)
    assert "127.0.0.1" in target["dsn"] and password not in json.dumps(target)
    assert password not in caplog.text
    monkeypatch.setenv("EMBEDFLOW_TEST_DSN", dsn.replace(password, password + "-wrong"))
    with pytest.raises(UserError) as failure:
        with connect(settings):
            pass
    assert "cannot connect" in str(failure.value) and password not in str(failure.value)


def test_unset_dsn_variable_is_named(monkeypatch):
    monkeypatch.delenv("EMBEDFLOW_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="EMBEDFLOW_NOT_SET, which is not set"):
        with connect(DatabaseSettings(dsn_env="EMBEDFLOW_NOT_SET")):
            pass


def test_embedded_server_listens_only_on_a_private_unix_socket(db):
    listen = db.execute("SHOW listen_addresses").fetchone()[0]
    socket_dir = db.execute("SHOW unix_socket_directories").fetchone()[0]
    assert listen == ""
    assert not os.stat(socket_dir).st_mode & 0o002  # not world-writable


def test_a_user_killed_while_holding_the_server_does_not_keep_it_running(tmp_path):
    """The embedded server stops when its last user leaves, also when another user that
    joined it meanwhile was killed (its pid stays in the server's handle list)."""
    settings = DatabaseSettings(pgdata=str(tmp_path / "pgdata"))
    postmaster = tmp_path / "pgdata" / "postmaster.pid"
    holder = None
    try:
        with connect(settings):
            code = (f"from embedflow.database import DatabaseSettings, connect\n"
                    f"with connect(DatabaseSettings(pgdata={settings.pgdata!r})):\n"
                    f"    print('holding', flush=True)\n"
                    f"    import time; time.sleep(120)\n")
            holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline() == "holding\n"  # its pid is in the handle list now
            holder.kill()
            holder.wait()
            assert postmaster.exists()
        assert not postmaster.exists(), "the server is still running"
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()
        if postmaster.exists():  # the failure above: stop the server this test started
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGINT)
