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
from pathlib import Path

from dqkit.live.app import EndpointConfig, build_app
from dqkit.live.queues import open_sink, parse_queue
from dqkit.live.trace import RequestSpans

log = logging.getLogger(__name__)


def consumer_command(queue: str, warehouse: Path, telemetry: Path, profiles: Path | None, geoip: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "dqkit.cli", "consume", "--queue", queue, "--warehouse", str(warehouse),
           "--telemetry", str(telemetry), "--stop-on-stdin-eof"]
    if profiles:
        cmd += ["--profiles", str(profiles)]
    if geoip:
        cmd += ["--geoip", str(geoip)]
    return cmd


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

    # A consumer stops when its stdin closes: when this process closes it below, or dies (even
    # by kill -9). A signal could arrive before the consumer has set up its handler; EOF cannot be missed.
    procs = [subprocess.Popen(consumer_command(queue, warehouse, telemetry, profiles, geoip), stdin=subprocess.PIPE)
             for _ in range(consumers)]
    print(f"dqkit serve: http://{host}:{port} (queue {sink.system} {sink.topic}, {consumers} consumer process(es), "
          f"pid {os.getpid()})", file=sys.stderr, flush=True)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False,
                                   timeout_graceful_shutdown=30))
    try:
        server.run()
    finally:
        sink.close()
        spans.close()
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log.error("consumer %d did not drain within 120 s; killing it (its uncommitted chunk is redelivered)", p.pid)
                p.kill()
