"""The Kafka queue adapter (confluent-kafka): one record per accepted request.

Producer: ``acks=all`` with idempotence, each record keyed by its user (else its batch id) and
carrying the W3C ``traceparent`` header; a request is acknowledged once the broker confirmed
its record. Consumer: the partitions of the topic, read from the consumer group's committed
offsets, which are committed only after the warehouse commit.

The one process that holds the warehouse's write lock is the loader, and it reads every
partition (assigned, not subscribed: no rebalance can hand a partition to a process that cannot
write the warehouse). The group ``dqkit-loader`` keeps its offsets.
"""

from __future__ import annotations

import asyncio
import threading

from dqkit.errors import DqkitError
from dqkit.live.envelope import Delivery
from dqkit.live.lines import Record
from dqkit.live.queues import QueueFull, RecordTooLarge, Sent

GROUP = "dqkit-loader"
DEFAULT_PARTITIONS = 6


def _kafka():
    try:
        import confluent_kafka
    except ImportError:  # pragma: no cover - a dependency, but say what to do
        raise DqkitError("the Kafka queue needs confluent-kafka: pip install confluent-kafka") from None
    return confluent_kafka


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, timeout_s: float = 15.0) -> None:
    """Create ``topic`` unless it exists."""
    ck = _kafka()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                              request_timeout=timeout_s)[topic]
    try:
        fut.result(timeout_s + 5)
    except ck.KafkaException as exc:
        if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
            raise DqkitError(f"cannot create Kafka topic {topic!r} on {bootstrap}: {exc.args[0].str()}") from None
    except TimeoutError:
        raise DqkitError(f"no answer from Kafka at {bootstrap} within {timeout_s:.0f} s; check --queue and that the "
                         "brokers are up") from None


class KafkaSink:
    """The endpoint's producer."""

    system = "kafka"

    def __init__(self, bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, delivery_timeout_s: float = 10.0,
                 max_pending: int = 10_000) -> None:
        ck = _kafka()
        self._ck = ck
        self.topic = topic
        ensure_topic(bootstrap, topic, partitions)
        self._producer = ck.Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
            "message.timeout.ms": int(delivery_timeout_s * 1000), "queue.buffering.max.messages": max_pending,
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="dqkit-kafka-producer", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, delivery: Delivery) -> Sent:
        """Produce ``delivery``'s record and wait for the broker's confirmation; raises :class:`QueueFull` or :class:`RecordTooLarge`."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(err, msg) -> None:  # on the poll thread
            if err is not None:
                exc = _too_large(err) or QueueFull(f"Kafka did not confirm the record: {err.str()}")
                loop.call_soon_threadsafe(_settle, fut, exc, None)
            else:
                loop.call_soon_threadsafe(_settle, fut, None, Sent(msg.partition(), msg.offset()))

        try:
            self._producer.produce(self.topic, value=delivery.line, key=delivery.record_key.encode(),
                                   headers=[("traceparent", delivery.traceparent.encode())], on_delivery=done)
        except BufferError:
            raise QueueFull("the Kafka producer's queue is full") from None
        except self._ck.KafkaException as exc:
            raise _too_large(exc.args[0]) or QueueFull(f"Kafka refused the record: {exc.args[0].str()}") from None
        return await fut

    def close(self) -> None:
        """Wait up to 30 s for outstanding records to be confirmed, then stop the poll thread."""
        self._producer.flush(30)
        self._stop.set()
        self._thread.join()


def _too_large(err) -> RecordTooLarge | None:
    ck = _kafka()
    if err.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE:
        return RecordTooLarge(f"the record is over the Kafka topic's size limit: {err.str()}")
    return None


def _settle(fut: asyncio.Future, exc: BaseException | None, value: Sent | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class KafkaSource:
    """The loader's consumer: every partition of ``topic``, from the group's committed offsets."""

    system = "kafka"

    def __init__(self, bootstrap: str, topic: str, group: str = GROUP, partitions: int = DEFAULT_PARTITIONS) -> None:
        ck = _kafka()
        self._ck = ck
        self.topic, self.group = topic, group
        ensure_topic(bootstrap, topic, partitions)
        self._consumer = ck.Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False, "fetch.wait.max.ms": 50,
        })
        meta = self._consumer.list_topics(topic, timeout=15)
        parts = sorted(meta.topics[topic].partitions)
        committed = self._consumer.committed([ck.TopicPartition(topic, p) for p in parts], timeout=15)
        self._consumer.assign(committed)
        self.partitions = len(parts)
        # The next offset to read per partition (for :meth:`drained`).
        self._next = {tp.partition: tp.offset for tp in committed}
        for p, off in self._next.items():
            if off < 0:
                self._next[p] = self._consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=15)[0]

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records from any partition, with their ``traceparent`` headers; a consumer error raises."""
        out = []
        for m in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            if m.error():
                if m.error().code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                raise DqkitError(f"Kafka consumer error: {m.error().str()}")
            tp = dict(m.headers() or []).get("traceparent")
            out.append(Record(m.value(), m.partition(), m.offset(), traceparent=tp.decode("ascii", "replace") if tp else None))
            self._next[m.partition()] = max(self._next.get(m.partition(), 0), m.offset() + 1)
        return out

    def drained(self) -> bool:
        """Every partition read up to its high watermark (asked of the broker, not the cache)."""
        for p, nxt in self._next.items():
            _, high = self._consumer.get_watermark_offsets(self._ck.TopicPartition(self.topic, p), timeout=15, cached=False)
            if nxt < high:
                return False
        return True

    def commit(self, records: list[Record]) -> None:
        """Synchronously commit, per partition, the offset after the last of ``records`` (only after the warehouse commit)."""
        upto: dict[int, int] = {}
        for r in records:
            upto[r.partition] = max(upto.get(r.partition, -1), r.offset)
        if upto:
            self._consumer.commit(offsets=[self._ck.TopicPartition(self.topic, p, o + 1) for p, o in sorted(upto.items())],
                                  asynchronous=False)

    def close(self) -> None:
        """Leave the group and close the consumer; offsets not committed are read again next time."""
        self._consumer.close()
