"""Hearth against HAProxy in front of the same number of containers, in one run.

    python -m loadtest.bench_haproxy [--containers 4] [--requests 20000] [--clients 1,16]
                                     [--duration-s 10] [--rounds 1] [--json out.json]

``--requests`` sets how long each wrk run lasts (about that many requests at
the rate a 1 s warm-up saw, whole seconds, at most ``--duration-s``).

DESIGN.md's first target: end to end, Hearth serves at least as many
requests per second as HAProxy (``balance leastconn``, ``maxconn 1`` per
server) in front of the same number of containers running a simple HTTP
function server, and adds no more latency at one client. Measured side by
side, with the same client (``wrk``, one thread, keep-alive) for all:

- ``direct``: one simple HTTP container hit straight (the reference);
- ``haproxy``: HAProxy in front of ``--containers`` simple HTTP containers;
- ``hearth``: a Hearth of its own (pool manager and gateway as subprocesses,
  like the tests) with a function returning ``{"ok": True}`` deployed with
  ``min_scale = max_scale = --containers`` and ``concurrency=1``.

The simple server is Python's ``http.server`` (threaded, keep-alive,
TCP_NODELAY, one write per response) in ``hearth-runtime:latest`` with its
entrypoint overridden and the same CPU and memory limits as Hearth's
containers, published on a loopback port (so docker's userland proxy is on
the direct and HAProxy paths; Hearth reaches its containers by unix socket).
HAProxy runs one thread by default: on these 2-core machines its own
default, a thread per core, does worse at 16 clients (threads contending
with the backends; ``--haproxy-threads 0`` shows it). Installs Debian's ``haproxy``
and ``wrk`` when missing and run as root. Every wait is bounded; all
traffic goes to 127.0.0.1. Containers carry the label
``hearth.bench=haproxy`` and are removed at the end, with the haproxy
process this run started, also on failure.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from tests.integration.stack import Stack, end_process, free_port

IMAGE = "hearth-runtime:latest"
LABEL = "hearth.bench=haproxy"
FUNCTION = "def handle(event, context):\n    return {'ok': True}\n"
# The simple function server: answers {"ok": true} to any method, headers and
# body in one write (no delayed-ACK stall), keep-alive, a thread per connection.
SERVER = """
import http.server
RESP = b'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 12\\r\\n\\r\\n{"ok": true}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.wfile.write(RESP)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops SYNs when 16 clients connect at once
S(("0.0.0.0", 8000), H).serve_forever()
"""
# wrk prints one JSON line at the end (no per-response callback: it would cost wrk CPU).
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
    .. '"errors": %d, "non2xx": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def docker(*args: str, timeout_s: float = 60) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def ensure_tools() -> None:
    """haproxy and wrk from Debian: installed here when missing and run as root."""
    missing = [pkg for pkg in ("haproxy", "wrk") if shutil.which(pkg) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        names = " ".join(missing)
        raise SystemExit(f"missing {names}: install them as root with `apt-get install -y {names}`")
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=True)


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s} s") from None
            time.sleep(0.1)


def start_servers(count: int, ids: list[str]) -> list[int]:
    """``count`` simple HTTP containers; their ids go into ``ids`` at once (for cleanup)."""
    ports = []
    for _ in range(count):
        ids.append(docker(
            "run", "-d", "--label", LABEL, "-p", "127.0.0.1::8000",
            "--cpus", "1", "--memory", "256m", "--memory-swap", "256m", "--read-only",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--entrypoint", "python3", IMAGE, "-c", SERVER,
        ))
    for cid in ids:
        mapping = docker("port", cid, "8000/tcp").splitlines()[0]  # "127.0.0.1:49153"
        ports.append(int(mapping.rsplit(":", 1)[1]))
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/")
    return ports


def haproxy_config(port: int, backends: list[int], threads: int) -> str:
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p} maxconn 1" for i, p in enumerate(backends))
    nbthread = f"    nbthread {threads}\n" if threads else ""
    return (
        f"global\n    maxconn 4096\n{nbthread}"
        "defaults\n    mode http\n    option http-keep-alive\n    timeout connect 2s\n"
        "    timeout client 30s\n    timeout server 30s\n    timeout queue 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    balance leastconn\n{servers}\n"
    )


@contextmanager
def haproxy(tmp: Path, backends: list[int], threads: int) -> Iterator[str]:
    """HAProxy in the foreground on a loopback port; stopped by its pid on exit."""
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, backends, threads))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], check=True, timeout=30)
    log = open(tmp / "haproxy.log", "wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}/"
    finally:
        end_process(proc)
        log.close()


def wrk(url: str, clients: int, duration_s: int, script: Path) -> dict[str, float]:
    """One wrk run of ``duration_s`` whole seconds: p50/p99/mean latency in ms, requests per second."""
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30)
    found = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    r = orjson.loads(found.group(1))
    return {
        "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "mean_ms": r["mean_us"] / 1000,
        "rps": r["requests"] / (r["duration_us"] / 1e6), "n": r["requests"],
        "errors": r["errors"] + r["non2xx"],
    }


def measure(url: str, clients: int, args: argparse.Namespace, script: Path) -> dict[str, float]:
    """A 1 s warm-up, then ``--rounds`` runs; the round with the median rate is kept.

    wrk runs for a time, not a count: a run lasts about ``--requests`` at the
    warm-up's rate, in whole seconds, at least 1 and at most ``--duration-s``.
    """
    warm = wrk(url, clients, 1, script)
    duration_s = max(1, min(args.duration_s, math.ceil(args.requests / max(warm["rps"], 1.0))))
    runs = sorted((wrk(url, clients, duration_s, script) for _ in range(args.rounds)), key=lambda r: r["rps"])
    return runs[len(runs) // 2]


def hearth(tmp: Path, containers: int) -> Stack:
    # No prewarmed spares and production health-check pace: only the measured
    # containers run, like on the HAProxy side.
    stack = Stack(tmp, HEARTH_PREWARM="0", HEARTH_PREWARM_MAX="0", HEARTH_HEALTH_INTERVAL_S="2").up()
    try:
        stack.deploy("bench", FUNCTION, min_scale=containers, max_scale=containers, concurrency=1)
        stack.wait_ready("bench", containers)
        return stack
    except BaseException:
        stack.down()
        raise


def run(args: argparse.Namespace, tmp: Path, ids: list[str]) -> dict[str, dict[str, float]]:
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    ports = start_servers(args.containers, ids)
    (tmp / "hearth").mkdir()
    stack = hearth(tmp / "hearth", args.containers)
    rows: dict[str, dict[str, float]] = {}
    try:
        with haproxy(tmp, ports, args.haproxy_threads) as front:
            for clients in args.clients:
                rows[f"direct c={clients}"] = measure(f"http://127.0.0.1:{ports[0]}/", clients, args, script)
                rows[f"haproxy c={clients}"] = measure(front, clients, args, script)
                rows[f"hearth c={clients}"] = measure(f"{stack.url}/function/bench", clients, args, script)
    finally:
        stack.down()
    return rows


def print_table(rows: dict[str, dict[str, float]], clients: list[int]) -> None:
    print(f"{'measure':<16}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'req/s':>9}{'n':>8}{'errors':>8}")
    for name, r in rows.items():
        print(f"{name:<16}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['mean_ms']:>9.3f}"
              f"{r['rps']:>9.0f}{r['n']:>8.0f}{r['errors']:>8.0f}")
    for c in clients:
        d, h, g = rows[f"direct c={c}"], rows[f"haproxy c={c}"], rows[f"hearth c={c}"]
        print(f"c={c}: hearth/haproxy req/s {g['rps'] / h['rps']:.2f}, p50 {g['p50_ms'] / h['p50_ms']:.2f}, "
              f"p99 {g['p99_ms'] / h['p99_ms']:.2f}; added to direct p50: "
              f"haproxy {h['p50_ms'] - d['p50_ms']:+.3f} ms, hearth {g['p50_ms'] - d['p50_ms']:+.3f} ms")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20000, help="about this many per run")
    parser.add_argument("--clients", default="1,16", help="comma-separated connection counts")
    parser.add_argument("--duration-s", type=int, default=10, help="upper bound of one run, seconds")
    parser.add_argument("--rounds", type=int, default=1, help="runs per measure; the median is kept")
    parser.add_argument("--haproxy-threads", type=int, default=1,
                        help="nbthread (default 1, its best here); 0: haproxy's default, a thread per core")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if min(args.containers, args.requests, args.rounds, args.duration_s, *args.clients) < 1:
        parser.error("--containers, --requests, --clients, --duration-s and --rounds must be positive")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    ensure_tools()
    ids: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hearth-bench-haproxy-") as tmp:
            rows = run(args, Path(tmp), ids)
    finally:
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)
    print(f"{args.containers} containers, wrk -t1 keep-alive; haproxy nbthread "
          f"{args.haproxy_threads or 'default'}, balance leastconn, maxconn 1 per server")
    print_table(rows, args.clients)
    if args.json:
        args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
