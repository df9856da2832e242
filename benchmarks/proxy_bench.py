"""The proxy (`python -m dummy_proxy`) against going direct to the same upstream.

Latency: small GETs over one keep-alive connection each way, alternating proxy and direct, so
both see the same machine at the same moment. Streaming: 1 GB downloaded through the proxy while
its peak RSS (VmHWM, reset first) is read; the same download direct, for the throughput.
"""
from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import procstat
from benchmarks.harness import REPO, BenchError
from benchmarks.stats import summary
from localcluster.stack import wait_for


def _spawn(args: list[str], port_file: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port_file.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})

    def ready():
        if proc.poll() is not None:
            raise BenchError(f"{args[1]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        return int(text) if text.isdigit() else None
    return proc, wait_for(ready, 30, f"{args[1]} to listen")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _get(conn: http.client.HTTPConnection, path: str, sink: bool = False) -> int:
    conn.request("GET", path, headers={"Authorization": "Bearer bench"})
    resp = conn.getresponse()
    total = 0
    if sink:
        while chunk := resp.read(1 << 20):
            total += len(chunk)
    else:
        total = len(resp.read())
    if resp.status != 200:
        raise BenchError(f"GET {path}: HTTP {resp.status}")
    return total


class ProxyRig:
    """The upstream and the proxy in front of it, as processes."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.upstream, self.upstream_port = _spawn(
            ["-m", "benchmarks.upstream", "--port-file", str(workdir / "upstream.port")],
            workdir / "upstream.port", workdir / "upstream.log")
        try:
            self.proxy, self.proxy_port = _spawn(
                ["-m", "dummy_proxy", "--listen", "127.0.0.1:0", "--upstream",
                 f"http://127.0.0.1:{self.upstream_port}", "--port-file",
                 str(workdir / "proxy.port"), "--log-level", "WARNING"],
                workdir / "proxy.port", workdir / "proxy.log")
        except BaseException:
            _stop(self.upstream)
            raise

    def close(self) -> None:
        _stop(self.proxy)
        _stop(self.upstream)

    def latency(self, requests: int) -> dict:
        direct = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        proxied = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=30)
        try:
            for conn in (direct, proxied):  # warm up: connections, the proxy's upstream pool
                for _ in range(20):
                    _get(conn, "/api/ping")
            d, p = [], []
            for _ in range(requests):
                for conn, out in ((direct, d), (proxied, p)):
                    t = time.perf_counter()
                    _get(conn, "/api/ping")
                    out.append((time.perf_counter() - t) * 1000)
        finally:
            direct.close()
            proxied.close()
        overhead = [b - a for a, b in zip(d, p)]
        return {"direct_ms": summary(d), "proxy_ms": summary(p), "overhead_ms": summary(overhead)}

    def stream(self, size: int) -> dict:
        out = {}
        procstat.reset_peak_rss(self.proxy.pid)
        out["proxy_rss_before_mb"] = procstat.rss_mb(self.proxy.pid)
        for name, port in (("proxy", self.proxy_port), ("direct", self.upstream_port)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                t = time.perf_counter()
                got = _get(conn, f"/api/blob?bytes={size}", sink=True)
                seconds = time.perf_counter() - t
            finally:
                conn.close()
            if got != size:
                raise BenchError(f"{name} stream: got {got} of {size} bytes")
            out[f"{name}_seconds"] = seconds
            out[f"{name}_mb_per_s"] = size / seconds / 1e6
            if name == "proxy":
                out["proxy_peak_rss_mb"] = procstat.peak_rss_mb(self.proxy.pid)
        out["bytes"] = size
        return out
