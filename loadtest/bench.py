"""Hearth's benchmark: gateway vs direct runtime, cold starts and /execute, in one run.

    python -m loadtest.bench [--requests 2000] [--json out.json] [--png out.png]

Starts its own pool manager and gateway (like the tests do), on the real
Docker engine, prints a table, and removes every container it made. Every
loop is bounded in count; all traffic goes to 127.0.0.1 or a unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from hearth.runtime_client import RuntimeConnection
from loadtest import bench_execute
from loadtest.stats import percentile
from tests.integration.stack import Stack

FUNCTION = "def handle(event, context):\n    return {'ok': True}\n"


def summary(samples_ms: list[float], wall_s: float) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples_ms, 0.50),
        "p99_ms": percentile(samples_ms, 0.99),
        "mean_ms": statistics.fmean(samples_ms),
        "rps": len(samples_ms) / wall_s,
    }


async def run_clients(clients: int, total: int, call: Any) -> dict[str, float]:
    samples: list[float] = []
    per_client = total // clients

    async def client() -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return summary(samples, time.perf_counter() - t0)


async def via_gateway(url: str, clients: int, total: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> None:
            async with session.get(url) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        await run_clients(clients, min(total, 200), call)  # warm up
        return await run_clients(clients, total, call)


async def direct(sockets: list[str], clients: int, total: int) -> dict[str, float]:
    conns = [await RuntimeConnection.open(sockets[i % len(sockets)]) for i in range(clients)]
    free = list(conns)
    meta: dict[str, Any] = {"op": "invoke", "id": "bench", "call_id": None, "method": "GET", "path": "/",
            "query": "", "headers": [], "timeout_s": 10.0}

    async def call() -> None:
        conn = free.pop()
        try:
            answer, _ = await conn.call(dict(meta), b"", 10.0)
            assert answer["status"] == 200, answer
        finally:
            free.append(conn)

    await run_clients(clients, min(total, 200), call)
    result = await run_clients(clients, total, call)
    for conn in conns:
        conn.close()
    return result


def routes(stack: Stack) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.control_port}/v1/routes?after=-1",
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return orjson.loads(resp.read())["functions"]


def cold_starts(stack: Stack, runs: int, prefix: str) -> list[float]:
    samples = []
    for i in range(runs):
        name = f"{prefix}-{i}"
        stack.deploy(name, FUNCTION)
        t0 = time.perf_counter()
        status, headers, _ = stack.request("GET", f"/function/{name}")
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == 200 and headers["X-Hearth-Start"] == "cold"
        stack.request("DELETE", f"/system/functions/{name}", admin=True)
        time.sleep(1.5)  # let the prewarm pool refill
    return samples


async def execute(stack: Stack, requests: int) -> dict[str, float]:
    result = await bench_execute.via_gateway(stack.url, requests)
    result["rps"] = 1000.0 / result["mean_ms"]  # one client: one run after another
    return result


async def warm(stack: Stack, requests: int) -> dict[str, dict[str, float]]:
    stack.deploy("bench", FUNCTION, min_scale=2, max_scale=2, concurrency=8)
    stack.wait_ready("bench", 2)
    sockets = [c["socket"] for c in routes(stack)["bench"]["containers"]]
    results = {}
    for clients in (1, 16):
        results[f"direct c={clients}"] = await direct(sockets, clients, requests)
        results[f"gateway c={clients}"] = await via_gateway(f"{stack.url}/function/bench", clients, requests)
    results["/execute hello c=1"] = await execute(stack, max(100, requests // 10))
    return results


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident memory (VmHWM), so the figure covers the whole load."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM for pid {pid}")


def print_table(rows: dict[str, dict[str, float]], cold: dict[str, list[float]]) -> None:
    print(f"{'measure':<22}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'req/s':>10}")
    for name, r in rows.items():
        print(f"{name:<22}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['rps']:>10.0f}")
    for clients in (1, 16):
        d, g = rows[f"direct c={clients}"], rows[f"gateway c={clients}"]
        print(f"added by gateway c={clients}: p50 {g['p50_ms'] - d['p50_ms']:+.2f} ms, "
              f"p99 {g['p99_ms'] - d['p99_ms']:+.2f} ms, throughput ratio {g['rps'] / d['rps']:.2f}")
    for name, samples in cold.items():
        print(f"{name:<22}{percentile(samples, 0.5):>10.1f}{max(samples):>10.1f}"
              f"{statistics.fmean(samples):>10.1f}{'n=' + str(len(samples)):>10}")


def chart(rows: dict[str, dict[str, float]], cold: dict[str, list[float]], path: Path) -> None:
    """p50 and p99 of every measure, log scale: sub-millisecond calls beside cold starts."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    names = [*rows, *cold]
    p50 = [r["p50_ms"] for r in rows.values()] + [percentile(v, 0.5) for v in cold.values()]
    p99 = [r["p99_ms"] for r in rows.values()] + [percentile(v, 0.99) for v in cold.values()]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_xticks(list(xs), names, rotation=25, ha="right")
    ax.set_title("Hearth: warm calls, cold starts and /execute")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--cold-runs", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path, default=Path("loadtest/reports/bench.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        (Path(tmp) / "warm").mkdir()
        stack = Stack(Path(tmp) / "warm", HEARTH_SANDBOX_MIN_SCALE="1").up()
        try:
            rows = asyncio.run(warm(stack, args.requests))
            gateway_peak_mb = peak_rss_mb(stack.procs["gateway"].pid)
            cold = {"cold (prewarmed)": cold_starts(stack, args.cold_runs, "pre")}
        finally:
            stack.down()
        (Path(tmp) / "bare").mkdir()
        # No prewarm at all, reactive included: every start is from nothing.
        bare = Stack(Path(tmp) / "bare", HEARTH_PREWARM="0", HEARTH_PREWARM_MAX="0").up()
        try:
            cold["cold (no container)"] = cold_starts(bare, max(3, args.cold_runs // 2), "bare")
        finally:
            bare.down()
    print_table(rows, cold)
    chart(rows, cold, args.png)
    print(f"gateway peak memory (VmHWM) after the warm runs: {gateway_peak_mb:.1f} MB")
    print(f"chart: {args.png}")
    if args.json:
        report = {"warm": rows, "cold_ms": cold, "gateway_peak_mb": gateway_peak_mb}
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
