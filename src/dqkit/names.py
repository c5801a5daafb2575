"""The telemetry vocabulary: span names, attribute keys and metric names of the reference design,
plus dqkit's additions, and the rule for which day an event counts on.

The span writer (``pipeline``) and every reader (``investigate``) use these constants, so a
name cannot drift between the code that writes a span and the code that reads it back.
"""

from __future__ import annotations

# --- span names (the reference design's) --------------------------------------------------
INGEST = "analytics.ingest_batch"
VALIDATE = "analytics.validate_batch"
DEDUP = "analytics.deduplicate"
PUBLISH = "analytics.publish_to_queue"
ENRICH = "analytics.enrich"
ENRICH_PROFILE = "analytics.enrich.user_profile"
ENRICH_GEO = "analytics.enrich.geo_ip"
ENRICH_SESSION = "analytics.enrich.session"
LOAD = "analytics.warehouse_load"
PARTITION = "analytics.warehouse.partition"
INSERT = "analytics.warehouse.insert"

INGEST_SIDE_SPANS = (INGEST, VALIDATE, DEDUP, PUBLISH)
ENRICH_SPANS = (ENRICH, ENRICH_PROFILE, ENRICH_GEO, ENRICH_SESSION)
LOAD_SPANS = (LOAD, PARTITION, INSERT)

# Span event on the validate span, and its attributes.
VALIDATION_FAILURES = "schema_validation_failures"
FAILURES_INVALID_COUNT = "invalid_count"
FAILURES_SAMPLE_ERRORS = "sample_errors"

# --- attribute keys -----------------------------------------------------------------------
BATCH_ID = "batch.id"
BATCH_EVENT_COUNT = "batch.event_count"
CLIENT_PLATFORM = "client.platform"
CLIENT_APP_VERSION = "client.app_version"
CLIENT_SDK_VERSION = "client.sdk_version"
INGESTION_ACCEPTED = "ingestion.accepted"
INGESTION_REJECTED = "ingestion.rejected"
INGESTION_REJECTED_INVALID = "ingestion.rejected_invalid"  # dqkit: invalid and duplicate kept apart
INGESTION_REJECTED_DUPLICATE = "ingestion.rejected_duplicate"
VALID_COUNT = "validation.valid_count"
INVALID_COUNT = "validation.invalid_count"
DEDUP_INPUT = "dedup.input_count"
DEDUP_REMOVED = "dedup.duplicates_removed"
DEDUP_OUTPUT = "dedup.output_count"
QUEUE_SYSTEM = "queue.system"
QUEUE_TOPIC = "queue.topic"
QUEUE_PARTITIONS = "queue.partition_count"
QUEUE_PUBLISHED = "queue.events_published"
EVENT_TYPE = "event.type"
EVENT_USER_ID = "event.user_id"  # the article's raw id; dqkit never writes it
EVENT_COUNT = "event.count"  # dqkit: one enrich span covers this many events
PROFILE_CACHE_HIT = "profile.cache_hit"
PROFILE_CACHE_MISS = "profile.cache_miss"
PROFILE_MISSING = "profile.missing"
PROFILE_ERRORS = "profile.errors"
GEO_RESOLVED = "geo.resolved"
GEO_UNRESOLVED = "geo.unresolved"
GEO_LOOKUP_ERRORS = "geo.lookup_errors"  # dqkit: damaged geo-IP records, loaded without geo
GEO_COUNTRY = "geo.country"
SESSION_ID = "session.id"
SESSION_IS_NEW = "session.is_new"
SESSION_EVENT_COUNT = "session.event_count"
BATCH_COUNT = "batch.count"  # dqkit: batches a warehouse load carried
TOTAL_LOADED = "warehouse.total_loaded"
DEAD_LETTERED = "warehouse.dead_lettered"
PARTITIONS_COUNT = "partitions.count"
TABLE_NAME = "table.name"
INSERT_ROW_COUNT = "insert.row_count"
INSERT_SUCCESS = "insert.success"
INSERT_DURATION_MS = "insert.duration_ms"
INSERT_ATTEMPTS = "insert.attempts"
INPUT_FORMAT = "dqkit.input.format"  # dqkit: native, segment or flat
CLOCK_INFERRED = "dqkit.clock.inferred"  # dqkit: the batch had no usable received_at

# OpenTelemetry semantic conventions (messaging, database).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION = "messaging.operation.type"
DB_SYSTEM = "db.system.name"

# --- resource attributes ------------------------------------------------------------------
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
CLOCK = "dqkit.clock"  # dqkit: "replay" when span times are the replay clock's

# --- metric attribute keys ----------------------------------------------------------------
REJECTION_STAGE = "rejection.stage"
REJECTION_REASON = "rejection.reason"

# --- metric names (the reference design's) ------------------------------------------------
M_INGESTED = "analytics.events.ingested"
M_REJECTED = "analytics.events.rejected"
M_ENRICH_LATENCY = "analytics.enrichment.latency_ms"
M_LAG = "analytics.pipeline.lag_seconds"
M_BATCH_SIZE = "analytics.ingestion.batch_size"
METRICS = (M_INGESTED, M_REJECTED, M_ENRICH_LATENCY, M_LAG, M_BATCH_SIZE)

# --- telemetry files ----------------------------------------------------------------------
TRACES_FILE = "traces.jsonl"
METRICS_FILE = "metrics.jsonl"
SCOPE_NAME = "dqkit.pipeline"  # the instrumentation scope of every span and metric

# --- the event-day rule -------------------------------------------------------------------
# An event counts on the UTC day of its own timestamp. An event rejected as invalid has no
# trustworthy timestamp (that may be why it was rejected), and one without a timestamp has
# none at all: those count on the day they arrived.
def event_day_sql(ts: str = "event_ts", received: str = "received_at", stage: str | None = "stage") -> str:
    """SQL for the day an event counts on, given its timestamp, arrival and rejection-stage columns."""
    if stage is None:
        return f"CAST(coalesce({ts}, {received}) AS DATE)"
    return f"CAST(CASE WHEN {stage} = 'validate' THEN {received} ELSE coalesce({ts}, {received}) END AS DATE)"


def event_time_sql(ts: str = "event_ts", received: str = "received_at", stage: str | None = "stage") -> str:
    """SQL for the moment an event is placed at on the timeline (same rule as :func:`event_day_sql`)."""
    if stage is None:
        return f"coalesce({ts}, {received})"
    return f"CASE WHEN {stage} = 'validate' THEN {received} ELSE coalesce({ts}, {received}) END"
