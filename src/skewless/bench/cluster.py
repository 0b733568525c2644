"""A throwaway Redis Cluster on loopback: ``redis-server --cluster-enabled yes`` masters on free ports.

Used by ``skewless bench`` (its cluster section) and by the Redis Cluster tests. Every server is a child process of
the caller, without persistence (``--save "" --appendonly no``): a master killed and started again comes back EMPTY
but with its slots (its ``nodes-<port>.conf`` is kept in the work directory), as a master restarted without a
replica does. Only processes started here are ever killed, by their process object.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

#: The cluster bus of a node listens on its port + 10000 (Redis's fixed offset).
BUS_OFFSET = 10_000
#: Milliseconds without an answer before the others flag a master as failing (Redis's default is 15000). Short, so
#: that a killed master's FAIL flag is cleared soon after it is back (Redis clears it after twice this time).
NODE_TIMEOUT_MS = 3000


def available() -> str | None:
    """None when a local cluster can be started here, else why not."""
    missing = [t for t in ("redis-server", "redis-cli") if shutil.which(t) is None]
    return f"{' and '.join(missing)} not installed (apt-get install redis-server)" if missing else None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` ports whose cluster-bus ports (+10000) are free too."""
    rng = rng or random.Random()
    ports: list[int] = []
    for _ in range(10_000):
        p = rng.randrange(20_000, 50_000)
        if p not in ports and p + BUS_OFFSET not in ports and _free(p) and _free(p + BUS_OFFSET):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"found no {n} free port pairs (port, port + {BUS_OFFSET}) on 127.0.0.1")


class LocalCluster:
    """``masters`` Redis Cluster masters (no replicas) on 127.0.0.1, created with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3, node_timeout_ms: int = NODE_TIMEOUT_MS):
        why = available()
        if why:
            raise RuntimeError(f"cannot start a Redis Cluster: {why}")
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node_timeout_ms = node_timeout_ms
        self.ports = free_cluster_ports(masters)
        self.procs: dict[int, subprocess.Popen] = {}

    # --- addresses ------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The ``SKEWLESS_REDIS`` value of this cluster."""
        return "redis_cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, port: int):
        """A plain (non-cluster) redis-py client of one node."""
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def client(self):
        """A redis-py cluster client."""
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports], socket_timeout=30)

    # --- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        for port in self.ports:
            self.start_node(port, wait=False)
        for port in self.ports:
            self._wait_ping(port)
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
             "--cluster-yes"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        self.wait_ok()
        return self

    def start_node(self, port: int, wait: bool = True) -> None:
        """Start (or start again, EMPTY, with its slots) the master on ``port``."""
        proc = self.procs.get(port)
        assert proc is None or proc.poll() is not None, f"node {port} is running"
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self._wait_ping(port)
            self.wait_ok()

    def kill(self, port: int) -> None:
        """SIGKILL the master on ``port`` (a process started here)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- state -----------------------------------------------------------------------------------------------------
    def _wait_ping(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.node(port).ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                proc = self.procs.get(port)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every running node reports ``cluster_state:ok`` and sees all masters."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                infos = [self.node(p).cluster("info") for p in self.ports]
                if all(i.get("cluster_state") == "ok" and int(i.get("cluster_size", 0)) == len(self.ports)
                       for i in infos):
                    return
                last = str([i.get("cluster_state") for i in infos])
            except Exception as e:  # noqa: BLE001 - a node not up yet
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster on ports {self.ports} not ok after {timeout:.0f} s: {last}")

    def keys_per_node(self) -> dict[int, int]:
        """``DBSIZE`` of every master."""
        return {p: int(self.node(p).dbsize()) for p in self.ports}

    def flush(self) -> None:
        for p in self.ports:
            self.node(p).flushall()
