"""tests/job_server.py: a rule script forked from the job server behaves as on a new interpreter
(its folder, arguments, environment, thread count, exit code, traceback, signals, and death with
whoever started it), and what it cannot serve so runs on the real interpreter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import job_server

REPORT = """
import json, os, sys
facts = {"forked": "torch" in sys.modules, "cwd": os.getcwd(), "argv": sys.argv, "path0": sys.path[0],
         "marker": os.environ.get("JOB_MARKER"), "name": __name__}
if facts["forked"]:
    import torch
    facts["threads"] = torch.get_num_threads()
print(json.dumps(facts))
"""


def script(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source)
    return path


def env(**changes) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **changes}


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> str:
    """The client, once its server serves (it imports for a while after the session starts)."""
    client = job_server.interpreter()
    if client is None:
        pytest.skip("EMBEDFLOW_TEST_COLD_JOBS is set: no job server")
    probe = script(tmp_path_factory.mktemp("probe"), "probe.py", REPORT)
    deadline = time.time() + 300
    while not json.loads(subprocess.run([client, str(probe)], capture_output=True, text=True, env=env(),
                                        check=True).stdout)["forked"]:
        assert time.time() < deadline, "the job server did not serve within 300 s"
        time.sleep(1)
    return client


def test_a_script_runs_forked_in_its_folder_with_its_arguments_environment_and_threads(python, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    done = subprocess.run([python, str(script(folder, "job.py", REPORT))], cwd=tmp_path, capture_output=True,
                          text=True, env=env(JOB_MARKER="x", OMP_NUM_THREADS="1"), check=True)
    facts = json.loads(done.stdout)
    assert facts["forked"]
    assert facts["cwd"] == str(tmp_path)
    assert facts["argv"] == [str(folder / "job.py")]
    assert facts["path0"] == str(folder)
    assert facts["marker"] == "x"
    assert facts["name"] == "__main__"
    assert facts["threads"] == 1


@pytest.mark.parametrize("source", ["import sys\nprint('out')\nsys.exit(3)\n",
                                    "def fail():\n    raise ValueError('boom')\n\nfail()\n",
                                    "import sys\nsys.exit('a message')\n"],
                         ids=["exit code", "traceback", "exit message"])
def test_exit_code_output_and_traceback_are_the_interpreter_s(python, tmp_path, source):
    path = script(tmp_path, "job.py", "import sys\nassert 'torch' in sys.modules or len(sys.argv) == 2\n" + source)
    forked = subprocess.run([python, str(path)], capture_output=True, text=True, env=env())
    real = subprocess.run([sys.executable, str(path), "real"], capture_output=True, text=True, env=env())
    assert (forked.returncode, forked.stdout) == (real.returncode, real.stdout)
    assert forked.stderr == real.stderr
    assert forked.returncode != 0


def _wait_for(path: Path, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.time() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text()


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        status = Path(f"/proc/{pid}/stat")
        if status.exists() and status.read_text().split(")")[-1].split()[0] == "Z":
            return True  # ended, not yet reaped by its server
        time.sleep(0.05)
    return False


SLEEPER = """
import os, sys, time
open(sys.argv[0] + ".pid", "w").write(f"{os.getpid()} {'torch' in sys.modules}")
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["SIGKILL to the client's group", "SIGTERM to the client"])
def test_a_job_ends_with_its_client(python, tmp_path, how):
    path = script(tmp_path, "job.py", SLEEPER)
    client = subprocess.Popen([python, str(path)], env=env(), start_new_session=True)
    try:
        pid, forked = _wait_for(Path(f"{path}.pid")).split()
        assert forked == "True" and int(pid) != client.pid
        if how.startswith("SIGKILL"):
            os.killpg(client.pid, signal.SIGKILL)
            assert client.wait(timeout=30) == -signal.SIGKILL
        else:
            client.terminate()  # forwarded to the job, whose death by it becomes the client's
            assert client.wait(timeout=30) == -signal.SIGTERM
        assert _gone(int(pid)), "the job outlived its client"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


@pytest.mark.parametrize("command", [["-c", "import sys; print('torch' in sys.modules)"], "HF_HOME differs"],
                         ids=["not a script", "import-time variable"])
def test_what_it_cannot_serve_runs_on_the_real_interpreter(python, tmp_path, command):
    if command == "HF_HOME differs":
        path = script(tmp_path, "job.py", "import sys\nprint('torch' in sys.modules)\n")
        done = subprocess.run([python, str(path)], capture_output=True, text=True,
                              env=env(HF_HOME=str(tmp_path / "hf")), check=True)
    else:
        done = subprocess.run([python, *command], capture_output=True, text=True, env=env(), check=True)
    assert done.stdout.strip() == "False"
