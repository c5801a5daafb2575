"""A loopback OTLP/gRPC receiver that writes what it gets as the Collector's file exporter does.

One ``ExportTraceServiceRequest`` per line in ``traces.jsonl`` and one
``ExportMetricsServiceRequest`` per line in ``metrics.jsonl``, in OTLP/JSON: camelCase field
names, int64 values as strings, enums as integers, defaults left out, and trace/span ids as
lowercase hex (protobuf's generic JSON mapping would give base64, which OTLP/JSON forbids).

It imports nothing from dqkit: it stands in for a production Collector.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node) -> None:
    """Rewrite every id field in a MessageToDict tree from base64 to lowercase hex, in place."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                _hex_ids(v)
    elif isinstance(node, list):
        for x in node:
            _hex_ids(x)


def otlp_json(message) -> str:
    """One OTLP/JSON line for an export request."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(doc)
    return json.dumps(doc, separators=(",", ":"))


class _Sink(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, out_dir: Path) -> None:
        self.lock = threading.Lock()
        # Open for the receiver's life, like the Collector's exporter; closed by close().
        self.traces = open(out_dir / "traces.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.metrics = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.spans = 0
        self.requests = 0

    def Export(self, request, context):
        line = otlp_json(request) + "\n"
        with self.lock:
            self.requests += 1
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                self.traces.write(line)
                self.traces.flush()
                return trace_service_pb2.ExportTraceServiceResponse()
            self.metrics.write(line)
            self.metrics.flush()
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def close(self) -> None:
        with self.lock:
            self.traces.close()
            self.metrics.close()


class OtlpFileReceiver:
    """``with OtlpFileReceiver(dir) as rx:`` listen on ``rx.endpoint`` (127.0.0.1, a free port)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._sink = _Sink(self.out_dir)
        # Both services share one servicer class, so their Export calls are distinguished by type.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._sink, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self._sink, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"
        self._server.start()

    @property
    def spans_received(self) -> int:
        return self._sink.spans

    def stop(self) -> None:
        """Finish in-flight requests, then close the files."""
        self._server.stop(grace=5).wait()
        self._sink.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def receiver_process(out_dir: str | Path, timeout_s: float = 30.0):
    """Run the receiver in a child process, as a Collector would be; yields its endpoint.

    Leaving the block closes the child's stdin: it finishes in-flight requests, closes its
    files and exits, so the files are complete once the block is left.
    """
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(out_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the OTLP receiver did not start (said {line!r})")
        yield f"127.0.0.1:{int(line)}"
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"the OTLP receiver exited with {proc.returncode}")


if __name__ == "__main__":
    rx = OtlpFileReceiver(sys.argv[1])
    print(rx.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    rx.stop()
