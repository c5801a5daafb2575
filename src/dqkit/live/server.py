"""``dqkit serve``: the ingestion endpoint on uvicorn, its queue, and its consumer processes.

Shutdown (SIGTERM or Ctrl-C): the endpoint answers 503 to new requests, finishes the ones in
hand (each acknowledged only once queued), closes the queue (the log's last fsync, Kafka's
flush), writes its last spans, then stops the consumers, which drain the queue, commit and
flush their own spans and metrics before they exit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dqkit.live.app import EndpointConfig, build_app
from dqkit.live.queues import open_sink, parse_queue
from dqkit.live.trace import RequestSpans

log = logging.getLogger(__name__)


def consumer_command(queue: str, warehouse: Path, telemetry: Path, profiles: Path | None, geoip: Path | None) -> list[str]:
    """The ``dqkit consume`` command line for one of ``dqkit serve``'s consumers, which stops when its stdin closes."""
    cmd = [sys.executable, "-m", "dqkit.cli", "consume", "--queue", queue, "--warehouse", str(warehouse),
           "--telemetry", str(telemetry), "--stop-on-stdin-eof"]
    if profiles:
        cmd += ["--profiles", str(profiles)]
    if geoip:
        cmd += ["--geoip", str(geoip)]
    return cmd


class Consumers:
    """The consumer processes of ``dqkit serve``, restarted when one dies (a crash loses nothing:
    its uncommitted chunk is redelivered to whichever consumer loads next).

    A consumer stops when its stdin closes: when :meth:`stop` closes it, or when this process dies
    (even by kill -9). A signal could arrive before the consumer has set up its handler; EOF
    cannot be missed."""

    restart_delay_s = 1.0

    def __init__(self, command: list[str], n: int) -> None:
        self.command = command
        self.procs = [self._start() for _ in range(n)]
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dqkit-consumers", daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(self.command, stdin=subprocess.PIPE)

    @property
    def pids(self) -> list[int]:
        """The process ids of the consumers running now (they change as dead ones are restarted)."""
        return [p.pid for p in self.procs]

    def _watch(self) -> None:
        started = [time.monotonic()] * len(self.procs)
        delay = [self.restart_delay_s] * len(self.procs)
        while not self._stopping.wait(self.restart_delay_s):
            for n, p in enumerate(self.procs):
                if p.poll() is None:
                    continue
                # One that dies soon after starting (a bad --geoip, say) is retried ever more slowly.
                quick = time.monotonic() - started[n] < 10
                delay[n] = min(delay[n] * 2, 60.0) if quick else self.restart_delay_s
                print(f"dqkit serve: consumer {p.pid} exited with {p.returncode}; starting another in {delay[n]:.0f} s",
                      file=sys.stderr, flush=True)
                if self._stopping.wait(delay[n]):
                    return
                self.procs[n] = self._start()
                started[n] = time.monotonic()
                self.restarts += 1

    def stop(self, timeout_s: float = 120) -> None:
        """Let every consumer drain the queue and exit."""
        self._stopping.set()
        self._thread.join()
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.error("consumer %d did not drain within %.0f s; killing it (its uncommitted chunk is redelivered)",
                          p.pid, timeout_s)
                p.kill()


def serve(warehouse: Path, telemetry: Path, queue: str = "embedded", host: str = "127.0.0.1", port: int = 8088,
          consumers: int = 1, write_key: str | None = None, profiles: Path | None = None, geoip: Path | None = None,
          max_body_bytes: int = 1 << 20) -> None:
    """Run the endpoint until SIGTERM/SIGINT (see the module docstring)."""
    import uvicorn

    spec = parse_queue(queue, warehouse)
    sink = open_sink(spec)
    spans = RequestSpans(telemetry, sink.system, sink.topic)
    app = build_app(sink, EndpointConfig(write_key=write_key, max_body_bytes=max_body_bytes), spans)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Refuse new requests at once; uvicorn then lets the ones in hand finish. The signal
            # is not re-raised after the shutdown (uvicorn's default): the consumers come next.
            app.state.draining = True
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    command = consumer_command(queue, warehouse, telemetry, profiles, geoip)
    consumers_ = Consumers(command, consumers)
    app.state.consumers = consumers_
    print(f"dqkit serve: http://{host}:{port} (queue {sink.system} {sink.topic}, {consumers} consumer process(es), "
          f"pid {os.getpid()})", file=sys.stderr, flush=True)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False,
                                   timeout_graceful_shutdown=30))
    try:
        server.run()
    finally:
        sink.close()
        spans.close()
        consumers_.stop()
