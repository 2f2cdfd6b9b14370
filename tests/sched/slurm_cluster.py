"""A real one-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd.

Everything lives in one private directory (config, state, spool, logs, munge socket and key),
on free ports, so it neither needs nor touches /etc/slurm or a system munged. Clients find it
through ``SLURM_CONF``. Two settings make it quicker than a default Slurm, not different:
``cred_expire=5`` (a requeued job may start again after ~6 s instead of ~2 minutes) and
``sched_interval=2`` (pending jobs are looked at every 2 s). Installing the Debian packages
(``slurmctld slurmd slurm-client munge``) needs root; :func:`ensure_installed` does it when
they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# Job states a job does not leave by itself.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")


class Unavailable(Exception):
    """Slurm cannot be had on this machine (not installed and cannot be; or does not start)."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def ensure_installed() -> None:
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise Unavailable(f"Slurm is not installed ({', '.join(missing_binaries())} missing) and "
                          f"installing it needs root: apt-get install {' '.join(PACKAGES)}")
    if shutil.which("apt-get") is None:
        raise Unavailable("Slurm is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:   # stale package lists: refresh once and retry
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0 or missing_binaries():
        raise Unavailable(f"could not install Slurm ({' '.join(cmd)}): {r.stderr[-2000:]}")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` is what clients need.

    One node on localhost by default. With ``nodes`` [(name, address), ...] and ``on`` (host ->
    the command prefix that runs on that host, e.g. the multi-host test bed's nsenter), one
    slurmd runs on each host and slurmctld, munged and every client command on the first:
    a login node that is also the controller. ``root`` must then be on a file system every
    host sees."""

    def __init__(self, root: Path, cpus: int | None = None, nodes=None, on=None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.host = socket.gethostname().split(".")[0]
        self.nodes = list(nodes or [(self.host, "127.0.0.1")])
        self.on = on or (lambda host: [])
        self.login = self.nodes[0][0] if nodes else None
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # --- set-up -------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge", "logs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        (r / "plugstack.conf").write_text("")
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(f"""\
# A one-node cluster on localhost for hpccl's tests (tests/sched/slurm_cluster.py).
ClusterName=hpccltest
SlurmctldHost={self.nodes[0][0] if self.login else self.host}({self.nodes[0][1]})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket,cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/spool/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/logs/slurmd-%n.log
PlugStackConfig={r}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
""" + "".join(f"NodeName={name} NodeAddr={addr} CPUs={self.cpus} RealMemory=1000 State=UNKNOWN\n"
             for name, addr in self.nodes)
            + f"PartitionName=debug Nodes={','.join(n for n, _ in self.nodes)} Default=YES "
              "MaxTime=INFINITE State=UP\n")

    def _spawn(self, name: str, cmd: list[str], host: str | None = None) -> None:
        log = open(self.root / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(self.on(host or self.login) + cmd, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env)

    def start(self, timeout: float = 60) -> "LocalSlurm":
        self._write_config()
        m = self.root / "munge"
        self._spawn("munged", [_sbin("munged"), "--foreground", "--force",
                               f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                               f"--log-file={m}/munged.log", f"--pid-file={m}/munged.pid",
                               f"--seed-file={m}/munged.seed"])
        self._wait(lambda: (m / "munge.socket").exists(), 20, "munged to create its socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("UP") >= 1, timeout,
                   "slurmctld to answer scontrol ping")
        for name, _ in self.nodes:
            self._spawn(f"slurmd-{name}" if self.login else "slurmd",
                        [_sbin("slurmd"), "-D", "-f", str(self.conf), "-N", name], host=name)
        self._wait(self._node_idle, timeout, f"node(s) {', '.join(n for n, _ in self.nodes)} to be idle")
        return self

    def _node_idle(self) -> bool:
        out = self._run(["sinfo", "-h", "-N", "-o", "%t"]).stdout.split()
        return len(out) == len(self.nodes) and all(s.rstrip("*~#") == "idle" for s in out)

    def _wait(self, check, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise Unavailable(f"{name} exited with code {p.returncode} while waiting for "
                                      f"{what}:\n{self.logs()}")
            try:
                if check():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.3)
        raise Unavailable(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.logs()}")

    def _run(self, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.on(self.login) + cmd, capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def logs(self, tail: int = 3000) -> str:
        out = []
        names = ["slurmctld.log", "munge/munged.log", "munged.stdout", "slurmctld.stdout",
                 *(f"logs/slurmd-{n}.log" for n, _ in self.nodes),
                 *(f"slurmd-{n}.stdout" for n, _ in self.nodes), "slurmd.stdout"]
        for f in names:
            p = self.root / f
            if p.exists() and p.stat().st_size:
                out.append(f"--- {f}\n{p.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    # --- jobs -----------------------------------------------------------------------------------------
    def job_info(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, RestartCnt, ExitCode, ...); {} if unknown."""
        r = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        if r.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout))

    def wait_state(self, job_id: str, states, timeout: float) -> dict:
        states = set(states)
        end = time.time() + timeout
        info = {}
        while time.time() < end:
            info = self.job_info(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not in {sorted(states)} after {timeout:.0f}s; last: "
                             f"{info.get('JobState')} {info}\n{self.logs()}")

    def scontrol(self, *args) -> subprocess.CompletedProcess:
        return self._run(["scontrol", *args])

    @property
    def client_env(self) -> dict:
        """What a client command (sbatch, squeue, hpccl submit) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    # --- tear-down ------------------------------------------------------------------------------------
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", "--user", str(os.getuid())])   # our jobs only
        for name in ("slurmd", *(f"slurmd-{n}" for n, _ in self.nodes), "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
