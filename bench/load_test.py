"""A bounded load test of the real app on loopback: concurrent clients mixing /rank, /metrics
and /align for a fixed time, then the server's memory after a rest and one more call.

    python -m bench.load_test [--clients 16] [--seconds 60] [--mix rank=0.7,metrics=0.2,align=0.1]
                              [--json PATH] [--no-login] [--rest 30] [--client http]

Starts ``python app.py`` (the demo world and checkpoints, or ``--app-args``) on a free
loopback port with a temporary password file, so every client logs in as a team member
would, and waits for the app's warm-up to finish. Each client is its own session of Gradio's
HTTP API (:class:`ApiClient`; ``--client gradio_client`` for that library, whose client CPU
on the same 2 cores is several times the server's) and sends one request at a time, a
seeded draw from the mix: /rank
(varied queries and knobs), /metrics (the as-trained table at a varied β, now and then a new
EM run) and /align (the Subspaces figure of a video its own searches returned, at varied
knobs and word encodings). Prints and writes latency percentiles per endpoint, the error
count (with the first messages), throughput, the server's resident memory before, at its
peak and ``--rest`` seconds after the load, and the answer to a call made after that rest.
"""

from __future__ import annotations

import argparse
import functools
import json
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gradio_client import Client

from emcl.auth import hash_password, write_auth_file
from emcl.fileio import atomic_write_json
from emcl.paths import REPO_ROOT

DEFAULT_JSON = "bench/results/load_mixed.json"
DEFAULT_MIX = "rank=0.7,metrics=0.2,align=0.1"
ENDPOINTS = ("/rank", "/metrics", "/align")
WARM_LINE = "warm-up done"  # app.py prints it when the background warm-up has finished
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
    answers and the warm-up is done (or raises with the log's tail)."""
    command = [sys.executable, "app.py", "--port", str(port), *extra]
    print("starting:", shlex.join(command), flush=True)
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        if not answered:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
                answered = status in (200, 401)
            except httpx.HTTPError:
                pass
        if answered and WARM_LINE in log.read_text():
            return server
        time.sleep(1)
    stop_server(server)
    raise RuntimeError(f"the app was not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class ApiClient:
    """One user over Gradio's documented HTTP API (``POST gradio_api/call/<name>``, then the
    event's stream): the queue and its concurrency groups as the page meets them, with a few
    milliseconds of client CPU a call where ``gradio_client`` spends about a hundred, which
    on a shared 2-core machine the server would otherwise lose to the load generator."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 120.0):
        self.url = url
        self.session = secrets.token_hex(8)  # one page session, as one browser tab keeps
        self.http = httpx.Client(timeout=timeout)
        if auth is not None:
            reply = self.http.post(f"{url}login", data={"username": auth[0], "password": auth[1]})
            reply.raise_for_status()
        info = self.http.get(f"{url}gradio_api/info")
        info.raise_for_status()
        self.parameters = {
            name: [(p["parameter_name"], p.get("parameter_default")) for p in e["parameters"]]
            for name, e in info.json()["named_endpoints"].items()
        }

    def predict(self, api_name: str, **kwargs: Any) -> Any:
        """The endpoint's answer (its one output, or the list of them); an error event
        raises ``RuntimeError`` with the server's message."""
        names = [name for name, _ in self.parameters[api_name]]
        unknown = set(kwargs) - set(names)
        if unknown:
            raise TypeError(f"{api_name} has no parameters {sorted(unknown)}")
        data = [kwargs.get(name, default) for name, default in self.parameters[api_name]]
        name = api_name.lstrip("/")
        body = {"data": data, "session_hash": self.session}
        posted = self.http.post(f"{self.url}gradio_api/call/{name}", json=body)
        posted.raise_for_status()
        stream = self.http.get(f"{self.url}gradio_api/call/{name}/{posted.json()['event_id']}")
        stream.raise_for_status()
        return parse_stream(stream.text)


def parse_stream(text: str) -> Any:
    """The last ``complete`` event's data of a ``gradio_api/call`` stream, or an error."""
    event, answer = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1])
            if event == "error":
                message = payload.get("error") if isinstance(payload, dict) else payload
                raise RuntimeError(f"the server answered an error: {message}")
            answer = payload
    if answer is None:
        raise RuntimeError(f"no answer in the stream: {text[:200]!r}")
    return answer[0] if isinstance(answer, list) and len(answer) == 1 else answer


# ---- what each client sends --------------------------------------------------------------------
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


def align_args(rng: random.Random, pair: tuple[str, str]) -> dict[str, Any]:
    """The Subspaces figure of ``pair`` (a video and the query that found it) at a varied β
    and word encoding and, now and then, another K (a new EM run, its grounding computed in
    the background)."""
    video_id, caption = pair
    return {
        "video_id": video_id, "caption": caption, "selection": "auto", "window": "",
        "words": rng.choice(["best", "tokens", "alone"]), "mode": "inference",
        "beta": rng.choice(BETAS), "k": rng.choice([7, 7, 7, 8]), "iters": 10,
        "log10_lam": -1.0, "init": "reference", "seed": 42,
    }  # fmt: skip


def check_rank(reply: Any) -> bool:
    return bool(reply["base"]) and bool(reply["emcl"])


def check_metrics(reply: Any) -> bool:
    return len(reply["rows"]) >= 2


def check_align(reply: Any) -> bool:
    """Five outputs, the figures and the score text among them."""
    return isinstance(reply, list | tuple) and len(reply) == 5 and "subspace" in str(reply[3])


@dataclass
class Tally:
    """Every request's outcome, shared by the client threads."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, ok: bool, seconds: float, error: str | None = None) -> None:
        record = {"endpoint": endpoint, "ok": ok, "s": seconds}
        if error:
            record["error"] = error
        with self.lock:
            self.records.append(record)


def timed_call(
    tally: Tally, endpoint: str, call: Callable[[], Any], check: Callable[[Any], bool]
) -> Any:
    """``call()`` timed and recorded: ok when it returns and ``check`` passes; any exception
    is an error with its message. Returns the reply (None on an error)."""
    start = time.perf_counter()
    try:
        reply = call()
        ok = bool(check(reply))
        error = None if ok else "unexpected answer"
    except Exception as exc:  # every failure is recorded and reported
        reply, ok, error = None, False, f"{type(exc).__name__}: {exc}"[:300]
    tally.add(endpoint, ok, time.perf_counter() - start, error)
    return reply if ok else None


def parse_mix(text: str) -> dict[str, float]:
    """``rank=0.7,metrics=0.2,align=0.1`` -> shares per endpoint, summing to 1."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        endpoint = "/" + name.strip().lstrip("/")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {name!r} in the mix (one of {ENDPOINTS})")
        shares[endpoint] = float(value)
    total = sum(shares.values())
    if not shares or total <= 0 or min(shares.values()) < 0:
        raise ValueError(f"the mix needs positive shares, got {text!r}")
    return {e: s / total for e, s in shares.items()}


def client_loop(
    number: int, connect: Callable[[], Any], stop_at: float, mix: dict[str, float],
    tally: Tally,
) -> None:  # fmt: skip
    """One client: its own session, one request at a time until ``stop_at``."""
    rng = random.Random(number)
    try:
        client = connect()
    except Exception as error:  # counted as an error; the run goes on
        tally.add("connect", False, 0.0, repr(error))
        return
    endpoints, weights = list(mix), list(mix.values())
    seen: list[tuple[str, str]] = []  # (video, query) pairs its searches returned
    checks = {"/rank": check_rank, "/metrics": check_metrics, "/align": check_align}
    while time.monotonic() < stop_at:
        endpoint = rng.choices(endpoints, weights)[0]
        if endpoint == "/align" and not seen:
            endpoint = "/rank"  # the figure is drawn for a search's top result
        if endpoint == "/rank":
            args = rank_args(rng)
        elif endpoint == "/metrics":
            args = metrics_args(rng)
        else:
            args = align_args(rng, rng.choice(seen))
        call = functools.partial(client.predict, **args, api_name=endpoint)
        reply = timed_call(tally, endpoint, call, checks[endpoint])
        if endpoint == "/rank" and reply is not None:
            seen = [*seen, (reply["emcl"][0]["video_id"], args["query"])][-8:]


def summarise(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
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
    out["requests_per_s"] = round(len(records) / seconds, 2) if seconds > 0 else None
    return out


class PeakRss:
    """The largest resident memory of ``pid`` seen every ``every`` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every, self.peak = pid, every, rss_mib(pid) or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_mib(self.pid) or 0.0)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def connector(url: str, auth: tuple[str, str] | None, kind: str = "http") -> Callable[[], Any]:
    """A function making one client session of ``kind``: ``http`` (:class:`ApiClient`) or
    ``gradio_client``."""
    if kind == "http":
        return lambda: ApiClient(url, auth)
    if kind == "gradio_client":
        return lambda: Client(url, auth=auth, verbose=False)
    raise ValueError(f"client must be 'http' or 'gradio_client', got {kind!r}")


def run_load(
    url: str, *, clients: int, seconds: float, mix: dict[str, float],
    auth: tuple[str, str] | None = None, kind: str = "http",
) -> dict[str, Any]:  # fmt: skip
    """``clients`` threads of ``kind`` for ``seconds`` against ``url``: the summary of their
    requests."""
    tally = Tally()
    started = time.monotonic()
    stop_at = started + seconds
    connect = connector(url, auth, kind)

    threads = [
        threading.Thread(target=client_loop, args=(i, connect, stop_at, mix, tally), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(tally.records, time.monotonic() - started)


def measure(args: argparse.Namespace, server: subprocess.Popen, url: str, auth: Any) -> dict:
    """The load, the memory before / at the peak / after the rest, and a call after it."""
    rss_before = rss_mib(server.pid)
    peak = PeakRss(server.pid)
    load_before = [round(v, 2) for v in os.getloadavg()]
    started = time.monotonic()
    summary = run_load(
        url, clients=args.clients, seconds=args.seconds, mix=args.mix, auth=auth,
        kind=args.client,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    load_after = [round(v, 2) for v in os.getloadavg()]
    time.sleep(args.rest)
    rss_peak = peak.stop()
    rss_rest = rss_mib(server.pid)
    after_start = time.perf_counter()
    reply = connector(url, auth, args.client)().predict(
        **rank_args(random.Random(99)), api_name="/rank"
    )
    after = {
        "ok": check_rank(reply),
        "ms": round((time.perf_counter() - after_start) * 1000, 1),
        "server_alive": server.poll() is None,
    }
    ratio = rss_rest / rss_before if rss_before and rss_rest else None
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "elapsed_s": round(elapsed, 1),
        "mix": {e.lstrip("/"): round(s, 3) for e, s in args.mix.items()},
        "client": args.client,
        "login": auth is not None,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        **summary,
        "server_rss_mib": {"before": rss_before, "peak": rss_peak, "after_rest": rss_rest},
        "rest_s": args.rest,
        "rss_after_rest_vs_before": round(ratio, 3) if ratio else None,
        "after_the_load": after,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"endpoint shares (default {DEFAULT_MIX})")
    ap.add_argument(
        "--rank-share",
        type=float,
        default=None,
        help="shorthand: this share of /rank, the rest /metrics",
    )
    ap.add_argument(
        "--client",
        choices=["http", "gradio_client"],
        default="http",
        help="how each client calls: Gradio's HTTP API (light) or gradio_client",
    )
    ap.add_argument("--rest", type=float, default=30.0, help="seconds after the load before RSS")
    ap.add_argument("--json", default=DEFAULT_JSON)
    ap.add_argument("--no-login", action="store_true", help="serve without --auth-file")
    ap.add_argument("--app-args", default="", help="more flags for app.py (quoted)")
    ap.add_argument("--start-timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 600 or not 0 <= args.rest <= 300:
        ap.error("1-64 clients for 1-600 s, a rest of 0-300 s: the test is meant to stay bounded")
    text = args.mix
    if args.rank_share is not None:
        text = f"rank={args.rank_share},metrics={1 - args.rank_share}"
    try:
        args.mix = parse_mix(text)
    except ValueError as error:
        ap.error(str(error))
    return args


def report_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for endpoint in ENDPOINTS:
        s = report[endpoint]
        lines.append(
            f"{endpoint:9} {s['requests']:5} requests, {s['ok']:5} ok, "
            f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, max {s['max_ms']} ms"
        )
    after = report["after_the_load"]
    lines.append(
        f"errors {report['errors']} {report['first_errors']}; {report['requests_per_s']} req/s; "
        f"server RSS {report['server_rss_mib']} MiB; a /rank after the rest: "
        f"ok={after['ok']} in {after['ms']} ms, server alive={after['server_alive']}"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="emcl-load-"))
    extra = shlex.split(args.app_args)
    auth = None
    if not args.no_login:
        auth = ("loadtest", secrets.token_urlsafe(12))
        write_auth_file(work / "auth.txt", {auth[0]: hash_password(auth[1])})
        extra += ["--auth-file", str(work / "auth.txt")]
    server = start_server(port, extra, work / "server.log", args.start_timeout)
    try:
        report = measure(args, server, f"http://127.0.0.1:{port}/", auth)
    finally:
        stop_server(server)
    print("\n".join(report_lines(report)))
    atomic_write_json(args.json, report, indent=1)
    print(f"wrote {args.json}")
    if report["errors"] or not report["after_the_load"]["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
