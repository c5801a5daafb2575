"""Live ingestion: an HTTP endpoint SDKs post to, a queue, and consumers that load the warehouse."""

from dqkit.live.app import EndpointConfig, build_app
from dqkit.live.consumer import ConsumerConfig, consume
from dqkit.live.queues import parse_queue

__all__ = ["ConsumerConfig", "EndpointConfig", "build_app", "consume", "parse_queue"]
