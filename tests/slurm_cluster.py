"""A real single-node SLURM cluster for a test: its own munged, slurmctld and slurmd.

Everything lives in folders of its own (configs, state, spool, logs, job completion file),
on ports of its own, with a munged bound to its own socket and key (slurm.conf's AuthInfo),
so the cluster touches nothing of the machine's and another running cluster does not touch
it. Clients reach it through SLURM_CONF (``SlurmCluster.env``). Debian's packages:
``apt-get install slurm-wlm munge``. slurmd runs jobs as their submitter, so it runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = "slurm-wlm munge"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "sacct", "scancel")
# Bounds on waiting for an event (a daemon ready, jobs gone); each wait polls every POLL_S.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
POLL_S = 0.2
# Declared larger than this machine (SlurmdParameters=config_overrides) so the profile's
# memory and CPU requests fit the test node; memory is not a consumable here (CR_Core).
NODE_CPUS = 16
NODE_MEMORY_MB = 256000


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def why_unusable() -> str | None:
    """Why no cluster can be started here, or None."""
    missing = missing_binaries()
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): apt-get install {PACKAGES}"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs (run the test as root)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(folder: Path, host: str, munge_socket: Path) -> str:
    return f"""\
ClusterName=embedflowtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: `sacct --completion` reads finished jobs from this file.
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/jobcomp.txt
# squeue keeps a finished job this long, so the plugin can read its state with squeue.
MinJobAge=600
SlurmdParameters=config_overrides
ReturnToService=2
NodeName={host} NodeHostname={host} CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """Start with ``start()``; ``stop()`` always ends what was started, also after a failure."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.host = socket.gethostname()
        self.conf = folder / "slurm.conf"
        self.bin = folder / "bin"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        self.daemons: list[tuple[str, subprocess.Popen]] = []
        # munged insists on a socket folder that everyone may enter; pytest's are 0700.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="embedflow-munge-"))
        self.munge_dir.chmod(0o755)
        self.munge_socket = self.munge_dir / "munge.sock"

    def start(self) -> SlurmCluster:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf(self.folder, self.host, self.munge_socket))
        self._write_srun()
        self._start_munged()
        self._spawn("slurmctld", ["slurmctld", "-D"])
        self._spawn("slurmd", ["slurmd", "-D"])
        self._wait_for(lambda: self.node_state() == "idle", "the node to be idle in sinfo")
        return self

    def _write_srun(self) -> None:
        """An srun that finds this cluster: the slurm plugin's job step (jobstep 0.6.1) starts
        its srun with every SLURM_* variable but the job's identity removed, SLURM_CONF too,
        and srun then looks for /etc/slurm/slurm.conf, which this cluster leaves alone."""
        real = shutil.which("srun")
        self.bin.mkdir(exist_ok=True)
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{real}" "$@"\n')
        srun.chmod(0o755)

    def _start_munged(self) -> None:
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn(
            "munged",
            ["munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={self.munge_dir}/munged.pid", f"--seed-file={self.munge_dir}/munged.seed",
             f"--log-file={self.folder}/munged.log"],
        )
        self._wait_for(self.munge_socket.exists, f"munged's socket {self.munge_socket}")

    def _spawn(self, name: str, command: list[str]) -> None:
        with open(self.folder / f"{name}.out", "w") as out:
            process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.daemons.append((name, process))

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():
            dead = [name for name, process in self.daemons if process.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"not within {START_TIMEOUT_S} s"
                raise RuntimeError(f"SLURM test cluster: waited for {what}, {why}\n{self.logs()}")
            time.sleep(POLL_S)

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)

    def node_state(self) -> str:
        return self.command("sinfo", "--noheader", "--nodes", self.host, "--format=%T").stdout.strip()

    def completed_jobs(self) -> dict[str, str]:
        """Job id -> state of every finished job, from the job completion records."""
        done = self.command("sacct", "--completion", "--noheader", "--parsable2", "--format=JobID,State")
        assert done.returncode == 0, done.stderr
        return dict(line.split("|")[:2] for line in done.stdout.splitlines() if line.strip())

    def logs(self) -> str:
        parts = []
        for log in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.out")):
            parts.append(f"--- {log.name} (end) ---\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is left of the jobs, wait until they are gone, end the daemons (newest first)."""
        if any(name == "slurmctld" and process.poll() is None for name, process in self.daemons):
            self.command("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self.command("squeue", "--noheader").stdout.strip() and time.monotonic() < deadline:
                time.sleep(POLL_S)
        for _name, process in reversed(self.daemons):
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.munge_dir, ignore_errors=True)
