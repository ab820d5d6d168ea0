"""Reaching the database: the embedded server, one reached by DSN, table names.

Loading, indexing and the drift check have their own files (test_load, test_index, test_check).
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import INDEX_BUILD
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
