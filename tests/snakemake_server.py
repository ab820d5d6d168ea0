"""Snakemake's command line in a process forked from one that has already imported Snakemake.

`python -m snakemake` spends about 2 s of CPU before it reads a Snakefile (its imports and
plugin registries): more than planning this workflow takes, and the suite starts Snakemake
a few hundred times. A server process imports Snakemake once and, on each request, forks: the
child changes to the request's folder and environment, points its stdout and stderr at files
and runs `snakemake.cli.main()` with the request's arguments, exactly what `python -m snakemake`
runs. Each run is still Snakemake's own command line in a process of its own; only the imports
are shared. Nothing of the workflow is imported before the fork, so each run imports the
workflow's own package from its own folder. A run's rule scripts start through
tests/job_server.py (its `sys.executable`), except on a cluster executor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import job_server

SERVER = r"""
import json, logging, os, sys
from snakemake.cli import main


def snakemake(args):
    sys.argv = ["snakemake", *args]
    try:
        main()
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return 0


def child(request):
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m snakemake` run in that folder has it
    os.environ.clear()
    os.environ.update(request["env"])
    if request["python"]:  # the rule scripts' interpreter (tests/job_server.py)
        sys.executable = request["python"]
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        os.dup2(os.open(path, flags), fd)
    return snakemake(request["args"])


def forked(request):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(request)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            logging.shutdown()  # Snakemake's log file under .snakemake/log
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


WARMUP_SNAKEFILE = ('from snakemake.utils import validate\nvalidate(config, "schema.yaml")\n'
                    'rule touch:\n    output: "touched"\n    shell: "touch {output}"\n')
WARMUP_SCHEMA = '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}'


# The modules Snakemake imports on the way through a run (here of a one-rule workflow that
# validates its config), found in a child: only the names come back, none of the run's state.
def modules_a_run_imports():
    import shutil, tempfile
    folder = tempfile.mkdtemp(prefix="snakemake-warmup-")
    with open(os.path.join(folder, "Snakefile"), "w") as snakefile, open(os.path.join(folder, "schema.yaml"), "w") as schema:
        snakefile.write(WARMUP_SNAKEFILE), schema.write(WARMUP_SCHEMA)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        before = set(sys.modules)
        snakemake(["--cores", "1", "--directory", folder, "--snakefile", os.path.join(folder, "Snakefile")])
        os.write(write, "\n".join(sorted(set(sys.modules) - before)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as names:
        modules = names.read().split()
    os.waitpid(pid, 0)
    shutil.rmtree(folder)
    return modules


# Warm up: the imports main() makes on a first call and the plugin registries it fills, then
# the modules it imports lazily during a run (about 0.2 CPU-s of each run otherwise).
saved = os.dup(1), os.dup(2)
sink = os.open(os.devnull, os.O_WRONLY)
os.dup2(sink, 1), os.dup2(sink, 2)
try:
    snakemake(["--version"])
    import importlib
    for name in modules_a_run_imports():
        try:
            importlib.import_module(name)
        except Exception:  # a module that imports only in a run's context: the run imports it then
            pass
finally:
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(saved[0], 1), os.dup2(saved[1], 2)
print("ready", flush=True)
for line in sys.stdin:
    print(forked(json.loads(line)), flush=True)
"""


class Server:
    """One server process; one request at a time."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="snakemake-server-"))
        self.pythonpath = os.environ.get("PYTHONPATH")
        # Its own process group: closing it also ends a run still going (an interrupted test),
        # as subprocess.run kills its child.
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], cwd=self.folder, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.process.stdout.readline() != "ready\n":
            self.close()
            raise RuntimeError("the Snakemake server did not start")

    def run(self, args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
        out, err = self.folder / "stdout", self.folder / "stderr"
        # Jobs a cluster runs start their own Snakemake, on the real interpreter.
        python = None if any(arg.startswith("--executor") for arg in args) else job_server.interpreter()
        request = {"args": list(args), "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "python": python}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply.strip().lstrip("-").isdigit():
            raise RuntimeError(f"the Snakemake server failed on {args}: {reply!r}")
        code = int(reply)
        return subprocess.CompletedProcess(["snakemake", *args], code, out.read_text(), err.read_text())

    def close(self, busy: bool = False) -> None:
        """End the server; ``busy``: a run is still going (the test was interrupted), end it too."""
        try:
            self.process.stdin.close()
            if not busy:
                self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            for name in ("stdout", "stderr"):
                (self.folder / name).unlink(missing_ok=True)
            self.folder.rmdir()


_idle: list[Server] = []
_started: list[Server] = []
_lock = threading.Lock()


def run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`python -m snakemake *args` in ``cwd`` with environment ``env``, through an idle server
    (a new one when all are busy: runs from several threads go on at once)."""
    with _lock:
        server = _idle.pop() if _idle else None
    if server is None:
        server = Server()
        with _lock:
            _started.append(server)
    if env.get("PYTHONPATH") != server.pythonpath:  # the server's sys.path would not be this run's
        with _lock:
            _idle.append(server)
        return plain(args, cwd, env)
    done = server.run(args, cwd, env)  # a server that failed is not used again
    with _lock:
        _idle.append(server)
    return done


def plain(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`python -m snakemake *args` as a new process."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, env=env)


def close_all() -> None:
    with _lock:
        servers, idle = list(_started), set(map(id, _idle))
        _started.clear(), _idle.clear()
    for server in servers:
        server.close(busy=id(server) not in idle)
    job_server.close()
