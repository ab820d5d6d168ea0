"""A test workflow's rule scripts in processes forked from one that has already imported their libraries.

Each job of a test workflow is a new Python process, and a model job's first seconds go to
importing torch and sentence-transformers (6-16 CPU-s here, more than the suite's 12-chunk
encodes take; about 70 model jobs a run). One server per pytest worker imports the third-party
libraries the scripts use, once. Snakemake, run through tests/snakemake_server.py, takes a small
client (tests/job_client.py) for `sys.executable`, so a rule's `python script.py` hands the
script, its folder, environment, arguments and stdin/stdout/stderr to the server; the server
forks, and the child runs the script as the interpreter would (`__main__`, its sys.argv and
sys.path[0], its thread counts, a traceback and exit code 1 on an error, exit handlers). The
job's exit status, code or signal, becomes the client's; the client forwards the signals it
receives, and the job kills itself when the client dies (a test that kills Snakemake's
process group), so a job ends with its Snakemake as it would on its own.

Nothing of the workflow's own package is imported before the fork: each job imports the
embedflow of its own copy. What else could differ from a new interpreter falls back to one
(exec): other command lines (`-m snakemake`, `-c`), a job environment that differs from the
server's in a variable read at import time, no server listening yet. EMBEDFLOW_TEST_COLD_JOBS=1
runs every job on the real interpreter.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import job_client

# What the rule scripts import, beyond the standard library (their own package aside).
PREIMPORTS = ("numpy", "yaml", "psutil", "threadpoolctl", "pyarrow", "pyarrow.parquet", "pyarrow.compute",
              "psycopg", "snakemake.script", "torch", "transformers", "sentence_transformers")


# --- the server (its own process) -------------------------------------------------------------

def _preimport() -> None:
    import importlib

    for name in PREIMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _apply_job_threads(env: dict) -> None:
    """The thread counts Snakemake gives a job (OMP_NUM_THREADS and kin) reach OpenMP and BLAS
    when they load, which in a fork was before the job: apply them as a new process would have."""
    threads = env.get("OMP_NUM_THREADS")
    count = int(threads) if threads and threads.isdigit() else os.cpu_count() or 1
    from threadpoolctl import threadpool_limits

    threadpool_limits(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def _watch_client(connection: socket.socket) -> None:
    """The client sends nothing more: end of stream means it died, and the job goes with it."""
    def watch():
        try:
            connection.recv(1)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def _exit_code(exit: SystemExit) -> int:
    if exit.code is None or isinstance(exit.code, int):
        return exit.code or 0
    print(exit.code, file=sys.stderr)
    return 1


def _print_error(error: BaseException) -> None:
    """The traceback a new interpreter prints: from the script's frames on, not this file's or runpy's."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, _runpy_file()):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def _runpy_file() -> str:
    import runpy

    return runpy.run_path.__code__.co_filename  # "<frozen runpy>": the standard library freezes it


def _run_job(request: dict, fds: list[int], connection: socket.socket) -> None:
    """In the forked child: become `python script.py` in the request's folder, then exit."""
    import runpy

    code = 1
    try:
        for target, fd in zip(request["fds"], fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd not in (0, 1, 2):
                os.close(fd)
        for fd in {0, 1, 2} - set(request["fds"]):
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        sys.path[0] = os.path.dirname(request["script"])
        tempfile.tempdir = None  # from this job's TMPDIR
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()  # a new process's global state is its own
        _apply_job_threads(request["env"])
        _watch_client(connection)
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = _exit_code(exit)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException as error:
            _print_error(error)
            code = 1
        threading._shutdown()  # as the interpreter does at exit: join the job's threads, then atexit
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _handle(connection: socket.socket) -> None:
    """In a child per request: fork the job, tell the client its pid, then its wait status."""
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    size, data = int.from_bytes(header, "big"), b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            return
        data += part
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        _run_job(request, fds, connection)
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    print(f"job {pid}: {request['script']} in {request['cwd']}", flush=True)  # the server's log
    _, status = os.waitpid(pid, 0)
    connection.sendall(f"{status}\n".encode())


def serve(socket_path: str) -> None:
    _preimport()
    sys.stdout.flush(), sys.stderr.flush()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the request children reap themselves
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable:  # the pytest worker closed its end: the session is over
            return
        connection, _ = listener.accept()
        if os.fork() == 0:
            code = 0
            try:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _handle(connection)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        connection.close()


# --- the pytest worker's side -----------------------------------------------------------------

class Server:
    """The server process, and the executable that Snakemake takes for its interpreter."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="job-server-"))
        self.socket = self.folder / "socket"
        env = {key: value for key, value in os.environ.items() if key not in job_client.PER_JOB_THREADS}
        env["HF_HUB_OFFLINE"] = "1"  # as the workflow tests run Snakemake (conftest.Workflow)
        self.python = self.folder / "python"
        source = Path(job_client.__file__).read_text()
        self.python.write_text(f"#!{sys.executable} -IS\nREAL = {sys.executable!r}\nSOCKET = {str(self.socket)!r}\n"
                               f"SERVER_ENV = {job_client.import_time_env(env)!r}\n{source}")
        self.python.chmod(0o755)
        log = (self.folder / "server.log").open("w")
        # Its own process group: closing it also ends the jobs still running (an interrupted test).
        self.process = subprocess.Popen([sys.executable, __file__, str(self.socket)], stdin=subprocess.PIPE,
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
                                        start_new_session=True)
        log.close()

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


_server: Server | None = None
_lock = threading.Lock()


def interpreter() -> str | None:
    """The executable for Snakemake's `sys.executable` (the server starts on the first call and
    serves once its imports are done: until then jobs run on the real interpreter); None when
    EMBEDFLOW_TEST_COLD_JOBS is set."""
    global _server
    if os.environ.get(job_client.COLD):
        return None
    with _lock:
        if _server is None:
            _server = Server()
        return str(_server.python)


def close() -> None:
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.close()


if __name__ == "__main__":
    serve(sys.argv[1])
