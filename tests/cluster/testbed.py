"""A cluster of real hosts on one machine, for the tests and benchmarks that cross a network.

Each host is a Linux network namespace with its own address, plus a *holder* process that
owns the host's own hostname (UTS namespace) and its own ``/tmp``, ``/dev/shm`` and
``/etc/hosts`` (mount namespace). Every command "on" a host enters the holder's namespaces
with ``nsenter``, so MPI, Slurm and hpccl see what they see on a cluster node: another
hostname, node-local scratch, and peers reachable only over TCP. Everything else (the
repository, the virtual environments, ``/var/tmp`` and the run directories under it) is
shared, like a cluster's shared file system.

The hosts hang off a bridge that lives in a namespace of its own, so nothing can reach the
machine's real network and the machine's own namespace is never touched. Each link can be
limited (``tc tbf``), taken down (a partition) or its host killed (node loss).

Launchers reach the hosts through :attr:`Testbed.agent`, a stand-in for ``ssh`` that takes
ssh's calling convention (``AGENT [options] HOST COMMAND...``):
OpenMPI ``--mca plm_rsh_agent AGENT``, MPICH ``-launcher ssh -launcher-exec AGENT``.

By hand (root):  python tests/cluster/testbed.py up --hosts 3
                 python tests/cluster/testbed.py exec node2 -- hostname
                 python tests/cluster/testbed.py down
A test bed left behind by a killed run is removed by the next ``up`` (or ``down``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE_ROOT = Path(os.environ.get("HPCCL_TESTBED_STATE", "/run/hpccl-testbed"))
NETNS_DIR = Path("/var/run/netns")
TOOLS = ("ip", "tc", "nsenter", "unshare")


class Unavailable(Exception):
    """The test bed cannot be built here (not root, tools missing, no namespaces)."""


def _run(cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie whose parent died before reaping it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pids_in_netns(netns: str) -> list[int]:
    """Every process whose network namespace is ``netns``: what runs on that host."""
    ino = _ns_inode(str(NETNS_DIR / netns))
    if ino is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ns_inode(f"/proc/{entry}/ns/net") == ino and alive(int(entry)):
            pids.append(int(entry))
    return pids


AGENT = r"""#!/bin/sh
# A stand-in for ssh into the hosts of test bed '{prefix}': AGENT [ssh options] HOST COMMAND...
# The command runs in the host's namespaces, in the caller's environment and directory.
while [ $# -gt 0 ]; do
  case "$1" in
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;   # ssh options that take a value
    -*) shift ;;
    *) break ;;
  esac
done
host=$1; shift
pid=$(cat "{state}/hosts/$host.pid" 2>/dev/null)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "ssh: connect to host $host port 22: No route to host" >&2; exit 255
fi
if [ "$(cat "{state}/hosts/$host.link" 2>/dev/null)" = down ]; then
  echo "ssh: connect to host $host port 22: Connection timed out" >&2; exit 255
fi
# Like ssh, this process stays on the calling host while the command runs on the other.
nsenter -t "$pid" -n -u -m --wd="$PWD" -- /bin/sh -c "$*" &
child=$!
trap 'kill -TERM $child 2>/dev/null; exit 143' TERM INT HUP
wait $child; rc=$?
# An ssh whose host died with its link down learns nothing: no FIN or RST reaches it, so it
# waits (until TCP gives up, many minutes). So does this, while the link is down.
while [ "$(cat "{state}/hosts/$host.link" 2>/dev/null)" = down ]; do sleep 1; done
exit $rc
"""

# The holder: made inside the host's network namespace by unshare (new UTS and mount
# namespaces); it names the host, gives it private scratch and the cluster's host names,
# then sleeps until it is killed (which ends the host).
HOLDER = """\
set -e
hostname {host}
mount --bind /tmp {stash}
mount -t tmpfs -o mode=1777 hpccl-tmp /tmp
{keep}
mount -t tmpfs -o mode=1777 hpccl-shm /dev/shm
mount --bind {hosts_file} /etc/hosts
echo ready > {ready}
exec sleep infinity
"""
# Paths that stay shared although they lie under /tmp: the repository (a CI clone may live
# there), with its environments. The machine's /tmp is bound aside first ({stash}) so that
# they can be bound back into the host's own, empty /tmp.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Testbed:
    """``hosts`` hosts named node1..nodeN on 10.213.0.0/24 (``subnet``), netns ``PREFIX-nodeI``."""
    __test__ = False        # not a pytest test class

    def __init__(self, hosts: int = 3, prefix: str = "hpcclt", subnet: str = "10.213.0",
                 shared_paths=(REPOSITORY,)):
        if not 1 <= hosts <= 200:
            raise ValueError(f"hosts must be in [1, 200], got {hosts}")
        self.prefix, self.subnet = prefix, subnet
        self.names = [f"node{i}" for i in range(1, hosts + 1)]
        self.state = STATE_ROOT / prefix
        self.agent = str(self.state / "ssh")
        self.bridge_ns = f"{prefix}-br"
        self.holders: dict[str, subprocess.Popen] = {}
        self.shared_paths = list(shared_paths)      # kept shared even under /tmp

    # --- names --------------------------------------------------------------------------------
    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.names.index(host) + 1}"

    def _bridge_port(self, host: str) -> str:
        return f"{self.prefix}{self.names.index(host) + 1}b"     # <= 15 characters

    # --- life cycle ---------------------------------------------------------------------------
    @staticmethod
    def check_available() -> None:
        if os.geteuid() != 0:
            raise Unavailable("the multi-host test bed needs root (network and mount namespaces)")
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise Unavailable(f"the multi-host test bed needs {', '.join(missing)} "
                              "(Debian: iproute2, util-linux)")

    def start(self, timeout: float = 30) -> "Testbed":
        self.check_available()
        self.clean_leftovers()
        (self.state / "hosts").mkdir(parents=True, exist_ok=True)
        (self.state / "owner.pid").write_text(str(os.getpid()))
        try:
            self._make_network()
            hosts_file = self.state / "hosts.txt"
            hosts_file.write_text("127.0.0.1 localhost\n" + "".join(
                f"{self.address(h)} {h}\n" for h in self.names))
            for h in self.names:
                self._start_holder(h, hosts_file)
            end = time.time() + timeout
            for h in self.names:
                ready = self.state / "hosts" / f"{h}.ready"
                while not ready.exists():
                    if self.holders[h].poll() is not None or time.time() > end:
                        raise Unavailable(f"host {h} did not come up: "
                                          f"{self.holders[h].stderr.read() if self.holders[h].stderr else ''}")
                    time.sleep(0.05)
                (self.state / "hosts" / f"{h}.pid").write_text(str(self.holders[h].pid))
                (self.state / "hosts" / f"{h}.link").write_text("up")
            agent = Path(self.agent)
            agent.write_text(AGENT.format(prefix=self.prefix, state=self.state))
            agent.chmod(0o755)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_network(self) -> None:
        br = self.bridge_ns
        _run(["ip", "netns", "add", br])
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        for dev in ("br0", "lo"):
            _run(["ip", "-n", br, "link", "set", dev, "up"])
        for h in self.names:
            ns, port = self.netns(h), self._bridge_port(h)
            _run(["ip", "netns", "add", ns])
            # Made in the bridge's namespace, so the machine's own namespace never holds it.
            _run(["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                  "netns", ns])
            _run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(h)}/24", "dev", "eth0"])
            for dev in ("eth0", "lo"):
                _run(["ip", "-n", ns, "link", "set", dev, "up"])

    def _start_holder(self, host: str, hosts_file: Path) -> None:
        stash = self.state / "hosts" / f"{host}.tmp"
        stash.mkdir()
        keep = []
        for path in self.shared_paths:
            rel = os.path.relpath(os.path.realpath(path), "/tmp")
            if not rel.startswith(".."):
                q, src = shlex.quote(os.path.join("/tmp", rel)), shlex.quote(str(stash / rel))
                keep.append(f"mkdir -p {q} && mount --bind {src} {q}")
        script = HOLDER.format(host=host, hosts_file=shlex.quote(str(hosts_file)),
                               stash=shlex.quote(str(stash)), keep="\n".join(keep),
                               ready=shlex.quote(str(self.state / "hosts" / f"{host}.ready")))
        cmd = ["nsenter", f"--net={NETNS_DIR / self.netns(host)}", "unshare", "--uts", "--mount",
               "--propagation", "private", "sh", "-c", script]
        self.holders[host] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              start_new_session=True)

    def stop(self) -> None:
        self._teardown(self.prefix)
        for p in self.holders.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.holders.clear()

    def clean_leftovers(self) -> None:
        """Remove a test bed of this prefix left by a run that died; refuse a live one."""
        owner = self.state / "owner.pid"
        if owner.exists():
            try:
                pid = int(owner.read_text())
            except ValueError:
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise Unavailable(f"test bed '{self.prefix}' is in use by pid {pid}; stop that "
                                  f"run or use another prefix")
        self._teardown(self.prefix)

    @staticmethod
    def _teardown(prefix: str) -> None:
        namespaces = [n for n in (os.listdir(NETNS_DIR) if NETNS_DIR.exists() else [])
                      if n.startswith(prefix + "-")]
        for ns in namespaces:     # every process on a host first: a killed run's ranks too
            for pid in pids_in_netns(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        end = time.time() + 10
        while time.time() < end and any(pids_in_netns(ns) for ns in namespaces):
            time.sleep(0.05)
        for ns in namespaces:     # the veth pairs go with their namespaces
            _run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(STATE_ROOT / prefix, ignore_errors=True)

    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- running things on hosts ---------------------------------------------------------------
    def on(self, host: str, cwd: str | None = None) -> list[str]:
        """The command prefix that runs what follows on ``host``."""
        pid = self.holders[host].pid if host in self.holders else \
            int((self.state / "hosts" / f"{host}.pid").read_text())
        return ["nsenter", "-t", str(pid), "-n", "-u", "-m", f"--wd={cwd or os.getcwd()}", "--"]

    def run(self, host: str, cmd: list[str], timeout: float = 300, env=None, cwd=None,
            **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.on(host, cwd) + list(cmd), capture_output=True, text=True,
                              timeout=timeout, env=env, **kw)

    def popen(self, host: str, cmd: list[str], env=None, cwd=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.on(host, cwd) + list(cmd), env=env, **kw)

    # --- faults and limits ---------------------------------------------------------------------
    def set_bandwidth(self, rate: str | None) -> None:
        """Limit every link to ``rate`` (tc syntax: '1gbit', '100mbit') both ways; None lifts it."""
        for h in self.names:
            for ns, dev in ((self.bridge_ns, self._bridge_port(h)), (self.netns(h), "eth0")):
                if rate is None:
                    _run(["nsenter", f"--net={NETNS_DIR / ns}", "tc", "qdisc", "del", "dev", dev, "root"],
                         check=False)
                else:
                    # burst >= 256 KiB: veth hands tbf 64 KiB GSO packets, which a smaller
                    # bucket would drop for ever.
                    _run(["nsenter", f"--net={NETNS_DIR / ns}", "tc", "qdisc", "replace", "dev",
                          dev, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms"])

    def set_link(self, host: str, up: bool) -> None:
        """Take ``host``'s link down (a partition: its processes live on, unreachable) or up."""
        _run(["nsenter", f"--net={NETNS_DIR / self.bridge_ns}", "ip", "link", "set",
              self._bridge_port(host), "up" if up else "down"])
        (self.state / "hosts" / f"{host}.link").write_text("up" if up else "down")

    def processes(self, host: str) -> list[int]:
        """What runs on ``host``, its holder aside."""
        holder = self.holders[host].pid if host in self.holders else \
            int((self.state / "hosts" / f"{host}.pid").read_text())
        return [p for p in pids_in_netns(self.netns(host)) if p != holder]

    def kill_host(self, host: str) -> None:
        """Node loss: SIGKILL every process on ``host`` and take its link down. The holder
        (the machine itself) stays, so the host can come back: ``set_link(host, True)``."""
        self.set_link(host, False)
        for pid in self.processes(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- by hand ------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", default="hpcclt")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the hosts (node1..nodeN) and print their agent")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--bandwidth", default=None, help="tc rate for every link, e.g. 1gbit")
    sub.add_parser("down", help="remove the hosts and everything running on them")
    ex = sub.add_parser("exec", help="run a command on a host: exec node2 -- hostname")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.cmd == "down":
        Testbed._teardown(a.prefix)
        return 0
    if a.cmd == "exec":
        tb = Testbed(1, prefix=a.prefix)
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        return subprocess.call(tb.on(a.host) + cmd)
    tb = Testbed(a.hosts, prefix=a.prefix)
    tb.start()
    if a.bandwidth:
        tb.set_bandwidth(a.bandwidth)
    # The holders outlive this process (own sessions); `down` removes them.
    print(json.dumps({"hosts": {h: tb.address(h) for h in tb.names}, "agent": tb.agent,
                      "openmpi": f"mpirun --mca plm_rsh_agent {tb.agent} --host "
                                 + ",".join(f"{h}:2" for h in tb.names),
                      "mpich": f"mpiexec.mpich -launcher ssh -launcher-exec {tb.agent} -hosts "
                               + ",".join(tb.names)}, indent=1))
    (tb.state / "owner.pid").write_text("0")   # owned by nobody alive: the next `up` replaces it
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
