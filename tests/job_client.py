"""The interpreter a test workflow's Snakemake runs its rule scripts with (tests/job_server.py).

tests/job_server.py writes this file's source, below a shebang to the real interpreter and the
three constants it names, into an executable that Snakemake takes for `sys.executable`. Run as
`<it> script.py`, it hands the script to the job server and becomes the job: the job's exit
code or signal is its own, and the signals it receives go to the job. Anything else, or a job
environment that differs from the server's in a variable read at import time, or no server
listening, runs the real interpreter instead (exec: the same process).
"""

import json
import os
import signal
import socket
import sys

COLD = "EMBEDFLOW_TEST_COLD_JOBS"  # set to 1: every job on the real interpreter
# Variables that libraries read when they are imported (or loaded, for OpenMP and BLAS): a job
# forked from the server sees the server's values of these, so they must be equal. The thread
# counts Snakemake sets per job are applied in the job instead (tests/job_server.py).
# TOKENIZERS_PARALLELISM is not one: tokenizers reads it when it parallelises, and the encoder
# sets it in the pytest worker itself (an in-process test), which sent every later job cold.
IMPORT_TIME_PREFIXES = ("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS", "SENTENCE_TRANSFORMERS", "TORCH", "PYTORCH",
                        "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS", "GOTO", "NUMEXPR", "ARROW",
                        "JEMALLOC", "MALLOC", "LD_", "XDG_", "HOME", "TQDM", "NO_COLOR", "SNAKEMAKE")
PER_JOB_THREADS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def import_time_env(env) -> dict:
    return {key: value for key, value in env.items()
            if key.startswith(IMPORT_TIME_PREFIXES) and key not in PER_JOB_THREADS}


def _open_fds() -> list:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            pass
    return fds


def _become(status: int) -> None:
    """Exit as the job did: its code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(real: str, socket_path: str, server_env: dict) -> None:
    args = sys.argv[1:]
    if (os.environ.get(COLD) or len(args) != 1 or not args[0].endswith(".py")
            or import_time_env(os.environ) != server_env):
        os.execv(real, [real, *args])
    # Signals wait until the job's pid is known, then go to it.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError:  # not listening yet (it is still importing), or gone
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.execv(real, [real, *args])
    fds = _open_fds()
    request = json.dumps({"script": os.path.abspath(args[0]), "argv": args, "cwd": os.getcwd(),
                          "env": dict(os.environ),
                          "fds": fds}).encode()
    socket.send_fds(connection, [len(request).to_bytes(8, "big")], fds)
    connection.sendall(request)
    replies = connection.makefile("rb")
    pid = int(replies.readline() or 0)
    if not pid:
        sys.exit("the job server did not start the job")
    for number in FORWARDED:
        signal.signal(number, lambda received, _frame: os.kill(pid, received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    status = replies.readline()  # the job's wait status, once it has ended
    if not status.strip():
        sys.exit("the job server ended before the job")
    _become(int(status))


if __name__ == "__main__":
    main(REAL, SOCKET, SERVER_ENV)  # noqa: F821 (written above this source by tests/job_server.py)
