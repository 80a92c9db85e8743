"""/execute latency: Hearth's sandbox against the original copy-then-`docker exec` design.

    python -m loadtest.bench_execute [--requests 300] [--baseline-requests 100] [--json out.json]
    python -m loadtest.bench_execute --gateway http://127.0.0.1:8080   # an already running Hearth

One client, one hello-world program at a time, measured side by side in
one run:

- ``hearth /execute``: POST /execute through the gateway (keep-alive), as a
  user sees it; by default against a Hearth of its own (pool manager and
  gateway as subprocesses, like the tests, two sandbox containers so that
  the periodic recycling is part of the figure);
- ``sandbox socket``: the same run sent straight to a sandbox container's
  runtime socket, i.e. without the gateway (own Hearth only);
- ``copy + docker exec``: the original design. A warm container of the same
  image with a writable bind mount; per run, ``put_archive`` copies
  main.py in, and ``exec_run`` runs ``python3`` on it.

Every loop is bounded in count; all traffic goes to 127.0.0.1, a unix
socket or the local Docker engine. Everything it creates carries the label
``hearth.bench=execute`` and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import docker
import orjson

from hearth.runtime_client import RuntimeConnection
from loadtest.stats import percentile
from tests.integration.stack import Stack

HELLO = "print('hello, world')\n"
EXPECTED = "hello, world\n"
LABEL = {"hearth.bench": "execute"}
WARMUP = 20


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples_ms, 0.50), "p99_ms": percentile(samples_ms, 0.99),
            "mean_ms": sum(samples_ms) / len(samples_ms), "n": len(samples_ms)}


async def via_gateway(url: str, requests: int) -> dict[str, float]:
    payload = {"language": "python", "code": HELLO}
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(WARMUP + requests):
            t0 = time.perf_counter()
            async with session.post(f"{url}/execute", json=payload) as resp:
                result = await resp.json()
            if i >= WARMUP:
                samples.append((time.perf_counter() - t0) * 1000)
            assert resp.status == 200 and result["stdout"] == EXPECTED, result
    return summary(samples)


async def via_socket(socket_path: str, requests: int) -> dict[str, float]:
    conn = await RuntimeConnection.open(socket_path)
    body = orjson.dumps({"code": HELLO})
    samples: list[float] = []
    try:
        for i in range(WARMUP + requests):
            t0 = time.perf_counter()
            answer, out = await conn.call({"op": "execute", "id": "bench"}, body, 30.0)
            if i >= WARMUP:
                samples.append((time.perf_counter() - t0) * 1000)
            assert answer.get("status") == "ok" and out == EXPECTED.encode(), answer
            if answer.get("recycle"):
                break  # its run quota (HEARTH_SANDBOX_MAX_RUNS) is spent: stop here
    finally:
        conn.close()
    return summary(samples)


def _main_py_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = HELLO.encode()
        info = tarfile.TarInfo("main.py")
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def copy_then_exec(image: str, requests: int) -> dict[str, float]:
    """The original design, timed per run: put_archive into a writable mount, then docker exec."""
    client = docker.from_env(timeout=60)
    with tempfile.TemporaryDirectory(prefix="hearth-bench-code-") as code_dir:
        os.chmod(code_dir, 0o777)
        container = client.containers.run(
            image, entrypoint=["sleep", "infinity"], detach=True, labels=LABEL, user="65534:65534",
            read_only=True, network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"],
            volumes={code_dir: {"bind": "/code", "mode": "rw"}},
        )
        try:
            samples: list[float] = []
            for i in range(WARMUP // 4 + requests):
                t0 = time.perf_counter()
                assert container.put_archive("/code", _main_py_tar())
                result = container.exec_run(["python3", "/code/main.py"], user="65534:65534")
                if i >= WARMUP // 4:
                    samples.append((time.perf_counter() - t0) * 1000)
                assert result.exit_code == 0 and result.output.decode() == EXPECTED, result
        finally:
            container.remove(force=True)
            client.close()
    return summary(samples)


def sandbox_socket(stack: Stack) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{stack.control_port}/v1/routes?after=-1",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with urllib.request.urlopen(req, timeout=10) as resp:
            containers = orjson.loads(resp.read())["functions"].get("_execute", {}).get("containers")
        if containers:
            return str(containers[0]["socket"])
        time.sleep(0.2)
    raise RuntimeError("no sandbox container became ready")


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(f"{'hello world, 1 client':<26}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'runs':>8}")
    for name, r in rows.items():
        print(f"{name:<26}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['n']:>8.0f}")
    hearth, original = rows["hearth /execute"], rows["copy + docker exec"]
    print(f"original / hearth: p50 {original['p50_ms'] / hearth['p50_ms']:.1f}x, "
          f"p99 {original['p99_ms'] / hearth['p99_ms']:.1f}x "
          f"(target: hearth's p50 within 1/20 of the original's)")


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    if args.gateway:
        rows["hearth /execute"] = asyncio.run(via_gateway(args.gateway.rstrip("/"), args.requests))
    else:
        with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
            env = {"HEARTH_SANDBOX_MIN_SCALE": "2", "HEARTH_SANDBOX_MAX_SCALE": "2"}
            if args.max_runs:
                env["HEARTH_SANDBOX_MAX_RUNS"] = str(args.max_runs)
            stack = Stack(Path(tmp), **env).up()
            try:
                # First, while no container is near its run quota (recycling is
                # part of the /execute figure, not of this one).
                rows["sandbox socket"] = asyncio.run(via_socket(sandbox_socket(stack), args.requests))
                rows["hearth /execute"] = asyncio.run(via_gateway(stack.url, args.requests))
            finally:
                stack.down()
    rows["copy + docker exec"] = copy_then_exec(args.image, args.baseline_requests)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed /execute runs (after a warm-up)")
    parser.add_argument("--baseline-requests", type=int, default=100, help="timed copy+exec runs")
    parser.add_argument("--gateway", help="measure this running gateway instead of starting a Hearth")
    parser.add_argument("--max-runs", type=int, help="HEARTH_SANDBOX_MAX_RUNS of its own Hearth "
                        "(default Hearth's: 200, so recycling is part of the figures)")
    parser.add_argument("--image", default=os.environ.get("HEARTH_RUNTIME_IMAGE", "hearth-runtime:latest"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = run(args)
    print_table(rows)
    if args.json:
        args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
