"""The test bed itself: hosts that are separate where cluster nodes are (hostname, /tmp,
/dev/shm, network), names every host resolves, links that can be limited and cut, and nothing
left behind, also by a run that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from testbed import NETNS_DIR, REPOSITORY, STATE_ROOT, Testbed, alive, pids_in_netns

HERE = os.path.dirname(os.path.abspath(__file__))

# A TCP sink on one host and a sender on another: bytes/s over the link.
SINK = "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);" \
       "s.bind(('0.0.0.0',5555));s.listen();c,_=s.accept();n=0\nwhile True:\n b=c.recv(1<<20)\n" \
       " if not b: break\n n+=len(b)\nprint(n)"
SEND = "import socket,time,sys;c=socket.create_connection(('{host}',5555),timeout=10);" \
       "b=bytes(1<<20);t=time.time()\nfor _ in range({mb}): c.sendall(b)\nc.shutdown(1);c.recv(1);" \
       "print(({mb}<<20)/(time.time()-t))"


def test_hosts_are_separate_and_resolve_each_other(testbed):
    names = [testbed.run(h, ["hostname"]).stdout.strip() for h in testbed.names]
    assert names == testbed.names
    marker = f"/tmp/hpccl-testbed-{os.getpid()}"
    testbed.run("node1", ["sh", "-c", f"echo node1 > {marker}; echo x > /dev/shm/tb-{os.getpid()}"])
    assert testbed.run("node1", ["cat", marker]).stdout.strip() == "node1"
    # node-local scratch: neither another host nor the machine itself sees it
    assert testbed.run("node2", ["test", "-e", marker]).returncode == 1
    assert testbed.run("node2", ["test", "-e", f"/dev/shm/tb-{os.getpid()}"]).returncode == 1
    assert not os.path.exists(marker)
    # ... while the repository and its environments stay shared, even from a clone under /tmp
    assert testbed.run("node2", ["test", "-x", sys.executable]).returncode == 0
    assert testbed.run("node2", ["test", "-f", os.path.join(REPOSITORY, "README.md")]).returncode == 0
    # every host resolves every other, to its own address, and reaches it over TCP
    probe = "import socket,sys;print(' '.join(socket.gethostbyname(h) for h in sys.argv[1:]))"
    r = testbed.run("node3", [sys.executable, "-c", probe, *testbed.names])
    assert r.stdout.split() == [testbed.address(h) for h in testbed.names], r.stderr
    # the machine's own network namespace holds none of the test bed's links
    own = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert testbed.prefix not in own


def test_agent_runs_commands_like_ssh(testbed):
    # ssh's calling convention: options, then the host, then the command as words
    r = subprocess.run([testbed.agent, "-x", "-o", "BatchMode=yes", "node2", "echo", "$(hostname)",
                        "on", "node2"], capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["node2", "on", "node2"], r.stderr
    r = subprocess.run([testbed.agent, "node9", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "node9" in r.stderr


def _throughput(tb, mb: int) -> float:
    sink = tb.popen("node2", [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = tb.run("node1", [sys.executable, "-c", SEND.format(host="node2", mb=mb)], timeout=120)
        assert r.returncode == 0, r.stderr
        assert int(sink.communicate(timeout=30)[0]) == mb << 20
        return float(r.stdout)
    finally:
        sink.kill()


def test_bandwidth_limit_and_partition(testbed):
    free = _throughput(testbed, 64)
    testbed.set_bandwidth("100mbit")
    try:
        limited = _throughput(testbed, 12)
    finally:
        testbed.set_bandwidth(None)
    # 100 Mbit/s is 12.5 MB/s: the limit holds (within tbf's burst), and binds far below the
    # link's own speed
    assert 8e6 < limited < 14e6, limited
    assert free > 4 * limited, (free, limited)
    # a partition: node3's link down, node1 cannot connect; back up, it can
    probe = [sys.executable, "-c", "import socket;socket.create_connection(('node3',9),timeout=2)"]
    testbed.set_link("node3", False)
    try:
        r = testbed.run("node1", probe)
        assert "timed out" in r.stderr or "unreachable" in r.stderr.lower(), r.stderr
    finally:
        testbed.set_link("node3", True)
    r = testbed.run("node1", probe)
    assert "ConnectionRefused" in r.stderr, r.stderr        # reached: nothing listens on port 9


def test_a_killed_run_leaves_nothing_the_next_start_keeps():
    prefix = "hpccltk"
    script = textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {HERE!r})
        from testbed import Testbed
        tb = Testbed(2, prefix={prefix!r}, subnet="10.214.0").start()
        tb.popen("node2", ["sleep", "300"])
        print("up", flush=True); time.sleep(300)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "up"
        end = time.time() + 10
        while len(pids_in_netns(f"{prefix}-node2")) < 2 and time.time() < end:
            time.sleep(0.05)
        assert len(pids_in_netns(f"{prefix}-node2")) >= 2      # the holder and the sleep
        # a live test bed of the same prefix is refused, not taken over
        with pytest.raises(Exception, match="in use by pid"):
            Testbed(2, prefix=prefix, subnet="10.214.0").start()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    # the owner died without cleaning: its hosts are still there ...
    assert (NETNS_DIR / f"{prefix}-node2").exists()
    left = pids_in_netns(f"{prefix}-node2")
    assert left
    # ... until the next start, which removes them first, and whose stop leaves nothing
    tb = Testbed(2, prefix=prefix, subnet="10.214.0").start()
    tb.stop()
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix + "-")]
    assert not (STATE_ROOT / prefix).exists()
    assert not [p for p in left if alive(p)]


def test_a_failed_start_leaves_nothing():
    prefix = "hpccltf"
    with pytest.raises(Exception):
        Testbed(2, prefix=prefix, subnet="10.999.0").start()     # no such address
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix + "-")]
    assert not (STATE_ROOT / prefix).exists()
