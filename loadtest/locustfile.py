"""Locust users for Hearth: sync and async invocation, signed webhooks, /execute.

Run it through ``python -m loadtest.run_locust``, which deploys the
functions named below and passes their settings in ``HEARTH_LOCUST_*``.
By hand: ``python -m locust -f loadtest/locustfile.py --host URL`` with those
variables set.

Only stdlib and locust here: gevent's monkey-patching breaks aiohttp when
both load in one process (DESIGN.md), so nothing from gateway/ is imported.

Each user class checks every answer, so a wrong body is a failure, not just
a wrong status; request names carry the class's route so the CSV shows each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any

import gevent
from locust import FastHttpUser, between, events, task
from locust.exception import StopUser
from locust.stats import CSV_STATS_INTERVAL_SEC

FUNCTION = os.environ.get("HEARTH_LOCUST_FUNCTION", "loadtest-echo")
HOOK_FUNCTION = os.environ.get("HEARTH_LOCUST_HOOK_FUNCTION", "loadtest-hook")
HOOK_SECRET = os.environ.get("HEARTH_LOCUST_HOOK_SECRET", "")
ADMIN_TOKEN = os.environ.get("HEARTH_LOCUST_TOKEN", "")
# Think time per user, in seconds: 0 makes each user a closed loop at full speed.
WAIT_S = float(os.environ.get("HEARTH_LOCUST_WAIT_S", "0"))
ASYNC_DEADLINE_S = 30.0
ASYNC_POLL_S = 0.05
REDELIVER_EVERY = 10

# The source the runner deploys as FUNCTION (and, with a secret, as HOOK_FUNCTION).
ECHO_SOURCE = """
def handle(event, context):
    return {"echo": event.json() if event.body else None, "call_id": context.call_id}
"""
EXECUTE_CODE = "import sys\nprint(sum(int(a) for a in sys.argv[1:]))\n"


def excerpt(resp: Any) -> str:
    return (resp.text or "")[:200]


def signature(body: bytes) -> str:
    """GitHub's X-Hub-Signature-256 for ``body``."""
    return "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


@events.quit.add_listener
def _final_csv_round(**_kwargs: Any) -> None:
    # Locust rewrites its CSV files every CSV_STATS_INTERVAL_SEC, not once
    # more at exit: wait one round so they hold the final figures.
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)


class HearthUser(FastHttpUser):
    """Shared settings; never run itself."""

    abstract = True
    wait_time = between(0, WAIT_S)
    # A queued call waits for a container; Hearth answers 503 itself past its queue timeout.
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.sent = 0

    def next_payload(self) -> dict[str, Any]:
        self.sent += 1
        return {"user": id(self), "n": self.sent}


class SyncUser(HearthUser):
    """POST /function/NAME and check the echo."""

    @task
    def invoke(self) -> None:
        payload = self.next_payload()
        with self.rest("POST", f"/function/{FUNCTION}", json=payload, name="/function/[name]") as resp:
            if resp.js is not None and resp.js.get("echo") != payload:
                resp.failure(f"wrong echo: {excerpt(resp)}")


class AsyncUser(HearthUser):
    """POST /async-function/NAME, then follow the call to its result (admin token)."""

    @task
    def invoke_async(self) -> None:
        payload = self.next_payload()
        started = time.perf_counter()
        with self.rest(
            "POST", f"/async-function/{FUNCTION}", json=payload, name="/async-function/[name]"
        ) as resp:
            call_id = (resp.js or {}).get("id")
            if resp.status_code != 202 or not call_id:
                resp.failure(f"expected 202 with an id, got {resp.status_code}: {excerpt(resp)}")
                return
        if ADMIN_TOKEN:
            self.follow(call_id, payload, started)

    def follow(self, call_id: str, payload: dict[str, Any], started: float) -> None:
        """Poll until the call finishes; report submit-to-result time as "ASYNC call completed"."""
        error: Exception | None = None
        try:
            call = self.poll(call_id, started)
            if call.get("state") != "succeeded" or result_json(call).get("echo") != payload:
                error = AssertionError(f"call {call_id} {call.get('state')}: {str(call)[:200]}")
        except (AssertionError, TimeoutError) as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="ASYNC", name="call completed", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=error, context={},
        )

    def poll(self, call_id: str, started: float) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while time.perf_counter() - started < ASYNC_DEADLINE_S:
            url = f"/system/calls/{call_id}"
            with self.rest("GET", url, headers=headers, name="/system/calls/[id]") as r:
                call: dict[str, Any] = r.js or {}
            if r.status_code != 200:
                raise AssertionError(f"call {call_id}: status {r.status_code}")
            if call.get("state") in ("succeeded", "failed"):
                return call
            time.sleep(ASYNC_POLL_S)  # gevent-patched: yields to the other users
        raise TimeoutError(f"call {call_id} unfinished after {ASYNC_DEADLINE_S} s")


def result_json(call: dict[str, Any]) -> dict[str, Any]:
    result = call.get("result") or {}
    if result.get("body_encoding") != "utf-8":
        return {}
    body = json.loads(result.get("body") or "null")
    return body if isinstance(body, dict) else {}


class HookUser(HearthUser):
    """Signed POST /hooks/NAME, GitHub style; every tenth is a redelivery that must be deduplicated."""

    def on_start(self) -> None:
        super().on_start()
        if not HOOK_SECRET:
            raise StopUser("HEARTH_LOCUST_HOOK_SECRET is not set")
        self.last: tuple[str, bytes, str] | None = None

    @task
    def deliver(self) -> None:
        redelivery = self.last is not None and self.sent % REDELIVER_EVERY == 0
        if redelivery and self.last is not None:
            delivery, body, first_id = self.last
            self.sent += 1
        else:
            delivery, body, first_id = str(uuid.uuid4()), json.dumps(self.next_payload()).encode(), ""
        headers = {
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature(body),
        }
        name = "/hooks/[name] redelivery" if redelivery else "/hooks/[name]"
        with self.rest("POST", f"/hooks/{HOOK_FUNCTION}", data=body, headers=headers, name=name) as resp:
            answer = resp.js or {}
            if resp.status_code != 202:
                resp.failure(f"expected 202, got {resp.status_code}: {excerpt(resp)}")
            elif answer.get("duplicate") != redelivery or (redelivery and answer.get("id") != first_id):
                resp.failure(f"redelivery={redelivery} but the gateway answered {answer}")
            elif not redelivery:
                self.last = (delivery, body, str(answer.get("id")))


class ExecuteUser(HearthUser):
    """POST /execute of a small program with arguments; checks its output."""

    @task
    def execute(self) -> None:
        args = [str(self.sent), "1", "2"]
        self.sent += 1
        run = {"language": "python", "code": EXECUTE_CODE, "args": args, "timeout_s": 5}
        with self.rest("POST", "/execute", json=run, name="/execute") as resp:
            out = resp.js or {}
            if out.get("status") != "ok" or out.get("stdout") != f"{sum(map(int, args))}\n":
                resp.failure(f"unexpected run: {excerpt(resp)}")
