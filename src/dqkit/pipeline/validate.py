"""Validation: decide, per event and for a whole chunk at once, whether it may go on.

Each rejected event gets one reason (the first rule it breaks, in the order below) and a
short detail; nothing about the event is dropped — its raw JSON travels with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dqkit.events import schema as s

_SAMPLE_ERRORS = 3


@dataclass
class ValidateResult:
    """One chunk's events split into valid and rejected, with per-delivery counts."""

    valid: pl.DataFrame
    """Events that passed, with ``event_ts`` parsed."""
    rejected: pl.DataFrame
    """Events that did not, with ``reason`` and ``detail``."""
    per_delivery: pl.DataFrame
    """``delivery_key, valid_count, invalid_count, sample_errors`` for every delivery."""


def _type_rule(field: str) -> tuple[pl.Expr, str, pl.Expr]:
    return (
        pl.col(f"{field}_type") != "VARCHAR",
        s.WRONG_TYPE,
        pl.format(f"{field} must be a string, got {{}}", pl.col(f"{field}_type").str.to_lowercase()),
    )


def _rules(limits: s.ValidationLimits) -> list[tuple[pl.Expr, str, pl.Expr]]:
    rules: list[tuple[pl.Expr, str, pl.Expr]] = [
        (pl.col("line_error").is_not_null(), pl.col("line_error"), pl.format("the whole line was unreadable ({})", pl.col("line_error"))),
        (pl.col("event_json_type") != "OBJECT", pl.lit(s.EVENT_NOT_OBJECT),
         pl.format("event must be a JSON object, got {}", pl.col("event_json_type").str.to_lowercase())),
        (pl.col("segment_type").is_not_null() & ~pl.col("segment_type").is_in(s.SEGMENT_TYPES),
         pl.lit(s.UNKNOWN_SEGMENT_TYPE), pl.format("Segment message type {} is not understood", pl.col("segment_type"))),
    ]
    for f in s.REQUIRED_STRING_FIELDS:
        rules.append((pl.col(f"{f}_type").is_null(), pl.lit(s.MISSING_FIELD), pl.lit(f"{f} is missing")))
        rules.append(tuple(pl.lit(x) if isinstance(x, str) else x for x in _type_rule(f)))  # type: ignore[arg-type]
    # properties (Segment: traits) is optional, but when present it must be an object: it is
    # loaded as a JSON object column, and a string or list there is a client bug to see.
    props = pl.col("properties")
    rules.append((
        props.is_not_null() & ~props.str.starts_with("{"), pl.lit(s.WRONG_TYPE),
        pl.format("properties must be a JSON object, got {}",
                  pl.when(props.str.starts_with('"')).then(pl.lit("string"))
                  .when(props.str.starts_with("[")).then(pl.lit("array"))
                  .when(props.is_in(["true", "false"])).then(pl.lit("boolean"))
                  .otherwise(pl.lit("number"))),
    ))
    rules += [
        (pl.col("event_id").str.len_bytes().is_between(1, 128).not_(), pl.lit(s.WRONG_TYPE),
         pl.lit("event_id must be 1-128 bytes")),
        (pl.col("user_id").str.len_bytes().is_between(1, 256).not_(), pl.lit(s.WRONG_TYPE),
         pl.lit("user_id must be 1-256 bytes")),
        (pl.col("received_at").is_null(), pl.lit(s.BAD_RECEIVED_AT),
         pl.lit("the batch has no plausible received_at (ISO-8601, 1970-2200)")),
        (pl.col("event_ts").is_null(), pl.lit(s.BAD_TIMESTAMP),
         pl.lit("timestamp is not an ISO-8601 date-time")),
        ((pl.col("event_ts") - pl.col("received_at")).dt.total_seconds() > limits.max_future_s,
         pl.lit(s.FUTURE_TIMESTAMP),
         pl.format("timestamp is {}s after the batch was received", (pl.col("event_ts") - pl.col("received_at")).dt.total_seconds())),
        ((pl.col("received_at") - pl.col("event_ts")).dt.total_seconds() > limits.max_age_s,
         pl.lit(s.ANCIENT_TIMESTAMP),
         pl.format("timestamp is {}s before the batch was received", (pl.col("received_at") - pl.col("event_ts")).dt.total_seconds())),
        (~pl.col("event_type").str.contains(s.EVENT_TYPE_PATTERN), pl.lit(s.BAD_EVENT_TYPE),
         pl.lit(f"event_type must match {s.EVENT_TYPE_PATTERN}")),
    ]
    if limits.allowed_event_types is not None:
        rules.append((~pl.col("event_type").is_in(sorted(limits.allowed_event_types)), pl.lit(s.UNKNOWN_EVENT_TYPE),
                      pl.lit("event_type is not in the allow-list")))
    rules.append((pl.col("properties").str.len_bytes() > limits.max_properties_bytes, pl.lit(s.OVERSIZED_PROPERTIES),
                  pl.format(f"properties are {{}} bytes; the limit is {limits.max_properties_bytes}",
                            pl.col("properties").str.len_bytes())))
    return rules


def validate(events: pl.DataFrame, deliveries: pl.DataFrame, limits: s.ValidationLimits | None = None) -> ValidateResult:
    """Split a chunk's raw events into valid and rejected, with per-delivery counts."""
    rules = _rules(limits or s.ValidationLimits())
    reason: pl.Expr = pl.lit(None, pl.String)
    detail: pl.Expr = pl.lit(None, pl.String)
    # Build the chain from the last rule to the first so the first broken rule wins.
    for cond, why, text in reversed(rules):
        reason = pl.when(cond.fill_null(False)).then(why).otherwise(reason)
        detail = pl.when(cond.fill_null(False)).then(text).otherwise(detail)
    judged = events.with_columns(reason=reason, detail=detail)
    valid = judged.filter(pl.col("reason").is_null()).drop("reason", "detail")
    rejected = judged.filter(pl.col("reason").is_not_null())

    sample = (
        rejected.with_columns(
            pl.format("{}: {}", pl.coalesce(pl.col("event_id"), pl.format("#{}", pl.col("event_index"))), pl.col("reason")).alias("err")
        )
        # Spread the sample over the batch: the first, middle and last rejects, not the last event's.
        .with_columns(pl.int_range(pl.len()).over("delivery_key").alias("_i"), pl.len().over("delivery_key").alias("_n"))
        .filter((pl.col("_i") == 0) | (pl.col("_i") == pl.col("_n") // 2) | (pl.col("_i") == pl.col("_n") - 1))
        .group_by("delivery_key")
        .agg(pl.col("err").unique(maintain_order=True).head(_SAMPLE_ERRORS).str.join("; ").alias("sample_errors"))
    )
    counts = (
        judged.group_by("delivery_key")
        .agg(
            valid_count=pl.col("reason").is_null().sum().cast(pl.Int64),
            invalid_count=pl.col("reason").is_not_null().sum().cast(pl.Int64),
        )
    )
    per_delivery = (
        deliveries.select("delivery_key")
        .join(counts, on="delivery_key", how="left")
        .join(sample, on="delivery_key", how="left")
        .with_columns(pl.col("valid_count", "invalid_count").fill_null(0))
    )
    return ValidateResult(valid, rejected, per_delivery)
