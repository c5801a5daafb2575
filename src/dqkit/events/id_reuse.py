"""An SDK that gives events ids it already gave to other events: cross-batch id reuse.

Unlike a retry (the same event resent, byte for byte), each affected event is a different event
(another type, time and properties) wearing the id of an earlier one, so deduplication by id
removes a real event. Vectorized: one pass per event type, never per event.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def reuse_ids(ev: pl.DataFrame, hit: pl.Expr, sdk_version: str, tag: str, rng: np.random.Generator) -> pl.DataFrame:
    """Each hit event takes the id of a recent earlier event of another batch from the same SDK
    version, of another event type (an id generator that hands out ids it already gave).

    Args:
        ev: the generator's event rows, with ``sent``, ``batch``, ``event_index``, ``noise`` and ``tag``.
        hit: the rows that should get a reused id.
        sdk_version: the SDK whose events reuse ids; donors are that SDK's events too.
        tag: marks each row that took an id (the scenario's spec).
        rng: picks each hit row's donor among the up to 500 latest eligible earlier events.

    Returns:
        ``ev`` with the hit rows' ``event_id`` replaced and ``tag`` set; a hit row with no
        earlier donor keeps its own id.
    """
    # Donors keep their own id and must reach dedup: untouched by noise or other scenarios.
    order = ev.with_row_index("_r").with_columns(_hit=hit).filter(pl.col("sdk_version") == sdk_version) \
        .sort("sent", "batch", "event_index")
    if order.is_empty():
        return ev
    rows = order["_r"].to_numpy()
    hits = order["_hit"].to_numpy()
    donor_ok = ~hits & order["noise"].is_null().to_numpy() & order["tag"].is_null().to_numpy()
    etype = order["event_type"].to_numpy()
    batch = order["batch"].to_numpy()
    batch_first = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]])
    first_of = np.repeat(batch_first, np.diff(np.r_[batch_first, len(batch)]))
    new_ids = ev["event_id"].to_numpy().copy()
    took = np.zeros(ev.height, dtype=bool)
    for t in np.unique(etype[hits]):
        pool = donor_ok & (etype != t)
        c = np.cumsum(pool)
        before = np.where(first_of > 0, c[np.maximum(first_of - 1, 0)], 0)  # donors in earlier batches
        victims = np.flatnonzero(hits & (etype == t) & (before > 0))
        # Among the last 500 such donors: the clash is with recent ids, well inside dedup's window.
        k = before[victims] - 1 - (rng.random(len(victims)) * np.minimum(before[victims], 500)).astype(np.int64)
        donors = np.searchsorted(c, k + 1)
        new_ids[rows[victims]] = new_ids[rows[donors]]
        took[rows[victims]] = True
    took_s = pl.Series(took)
    return ev.with_columns(event_id=pl.Series(new_ids, dtype=pl.String),
                           tag=pl.when(took_s).then(pl.lit(tag)).otherwise(pl.col("tag")))
