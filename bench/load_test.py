"""A bounded load test of the real app on loopback: concurrent clients calling /rank and
/metrics for a fixed time, then one more call to show the server still answers.

    python -m bench.load_test [--clients 16] [--seconds 60] [--json PATH] [--no-login]

Starts ``python app.py`` (the demo world and checkpoints, or ``--app-args``) on a free
loopback port with a temporary password file, so every client logs in as a team member
would; each client is its own ``gradio_client.Client`` and sends one request at a time,
a seeded mix of /rank (varied queries and knobs) and /metrics (varied β). Prints and writes
latency percentiles per endpoint, the error count (with the first messages), throughput, the
server's resident memory before and after, and the answer to a call made after the load.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gradio_client import Client

from emcl.auth import hash_password, write_auth_file
from emcl.fileio import atomic_write_json
from emcl.paths import REPO_ROOT

DEFAULT_JSON = "bench/results/load_test.json"
QUERIES = [
    "a red circle moves to the left",
    "a blue square slides down",
    "a green triangle bounces",
    "two shapes move apart",
    "a yellow star spins",
    "something moves to the right",
    "a small purple circle grows",
    "an orange square shrinks",
]
BETAS = [0.0, 1.0, 2.0, 4.0, 8.0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start_server(port: int, extra: list[str], log: Path, timeout: float) -> subprocess.Popen:
    """``python app.py --port PORT *extra`` in its own process group; returns once the page
    answers (or raises with the log's tail)."""
    command = [sys.executable, "app.py", "--port", str(port), *extra]
    print("starting:", shlex.join(command), flush=True)
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code in (200, 401):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(server)
    raise RuntimeError(f"the app did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def rank_args(rng: random.Random) -> dict[str, Any]:
    return {
        "query": rng.choice(QUERIES),
        "beta": rng.choice(BETAS),
        "k": rng.choice([4, 7, 8]),
        "iters": 10,
        "lam": 0.1,
        "init": rng.choice(["reference", "data"]),
        "top_k": 10,
        "mode": "inference",
    }


def metrics_args(rng: random.Random) -> dict[str, Any]:
    """The as-trained table (the page's default) at a varied β and, now and then, another
    iteration count (a new EM run); the knobs by name, as ``/metrics`` takes them."""
    return {
        "mode": "inference", "beta": rng.choice(BETAS[:3]), "k": 7,
        "iters": rng.choice([10, 10, 10, 9]), "lam": 0.1, "init": "reference", "seed": 42,
        "protocol": "trained",
    }  # fmt: skip


def client_loop(
    number: int, url: str, auth: tuple[str, str] | None, stop_at: float, rank_share: float,
    records: list[dict[str, Any]], lock: threading.Lock,
) -> None:  # fmt: skip
    """One client: its own session, one request at a time until ``stop_at``."""
    rng = random.Random(number)
    try:
        client = Client(url, auth=auth, verbose=False)
    except Exception as error:  # counted as an error; the run goes on
        with lock:
            records.append({"endpoint": "connect", "ok": False, "s": 0.0, "error": repr(error)})
        return
    while time.monotonic() < stop_at:
        endpoint = "/rank" if rng.random() < rank_share else "/metrics"
        args = rank_args(rng) if endpoint == "/rank" else metrics_args(rng)
        start = time.perf_counter()
        try:
            reply = client.predict(**args, api_name=endpoint)
            ok = bool(reply["base"]) if endpoint == "/rank" else len(reply["rows"]) >= 2
            error = None if ok else "empty answer"
        except Exception as exc:  # every failure is recorded and reported
            ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
        record = {"endpoint": endpoint, "ok": ok, "s": time.perf_counter() - start}
        if error:
            record["error"] = error
        with lock:
            records.append(record)


def summarise(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in ("/rank", "/metrics"):
        times = np.array([r["s"] for r in records if r["endpoint"] == endpoint and r["ok"]])
        out[endpoint] = {
            "requests": sum(r["endpoint"] == endpoint for r in records),
            "ok": int(times.size),
            "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1) if times.size else None,
            "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1) if times.size else None,
            "max_ms": round(float(times.max()) * 1000, 1) if times.size else None,
        }
    errors = [r for r in records if not r["ok"]]
    out["errors"] = len(errors)
    out["first_errors"] = [f"{r['endpoint']}: {r['error']}" for r in errors[:5]]
    out["requests_per_s"] = round(len(records) / seconds, 2)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rank-share", type=float, default=0.5, help="fraction of /rank calls")
    ap.add_argument("--json", default=DEFAULT_JSON)
    ap.add_argument("--no-login", action="store_true", help="serve without --auth-file")
    ap.add_argument("--app-args", default="", help="more flags for app.py (quoted)")
    ap.add_argument("--start-timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 600:
        ap.error("1-64 clients for 1-600 s: the test is meant to stay bounded")
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="emcl-load-"))
    extra = shlex.split(args.app_args)
    auth = None
    if not args.no_login:
        auth = ("loadtest", secrets.token_urlsafe(12))
        write_auth_file(work / "auth.txt", {auth[0]: hash_password(auth[1])})
        extra += ["--auth-file", str(work / "auth.txt")]
    server = start_server(port, extra, work / "server.log", args.start_timeout)
    url = f"http://127.0.0.1:{port}/"
    try:
        rss_before = rss_mib(server.pid)
        records: list[dict[str, Any]] = []
        lock = threading.Lock()
        started = time.monotonic()
        stop_at = started + args.seconds
        threads = [
            threading.Thread(
                target=client_loop,
                args=(i, url, auth, stop_at, args.rank_share, records, lock),
                daemon=True,
            )
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        summary = summarise(records, elapsed)
        after_start = time.perf_counter()
        reply = Client(url, auth=auth, verbose=False).predict(
            **rank_args(random.Random(99)), api_name="/rank"
        )
        after = {
            "ok": bool(reply["base"]),
            "ms": round((time.perf_counter() - after_start) * 1000, 1),
            "server_alive": server.poll() is None,
        }
        report = {
            "clients": args.clients,
            "seconds": args.seconds,
            "elapsed_s": round(elapsed, 1),
            "rank_share": args.rank_share,
            "login": auth is not None,
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            **summary,
            "server_rss_mib": {"before": rss_before, "after": rss_mib(server.pid)},
            "after_the_load": after,
        }
    finally:
        stop_server(server)
    for endpoint in ("/rank", "/metrics"):
        s = report[endpoint]
        print(
            f"{endpoint:9} {s['requests']:5} requests, {s['ok']:5} ok, "
            f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, max {s['max_ms']} ms"
        )
    print(
        f"errors {report['errors']} {report['first_errors']}; {report['requests_per_s']} req/s; "
        f"server RSS {report['server_rss_mib']} MiB; a /rank after the load: "
        f"ok={after['ok']} in {after['ms']} ms, server alive={after['server_alive']}"
    )
    atomic_write_json(args.json, report, indent=1)
    print(f"wrote {args.json}")
    if report["errors"] or not after["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
