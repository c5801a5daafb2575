"""The dedup window: compact in memory, exact in what it reports."""

from datetime import UTC, datetime, timedelta

import polars as pl

from dqkit.pipeline.dedup import STATE_SCHEMA, Deduplicator

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _chunk(n: int, ids: list[str], batch: str, at: datetime, batches: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``batches`` deliveries (of ``batch``-0, -1, ...; one when 1) each carrying ``ids``."""
    names = [batch] if batches == 1 else [f"{batch}-{j}" for j in range(batches)]
    valid = pl.DataFrame({
        "delivery_key": [f"k-{b}" for b in names for _ in ids], "batch_id": [b for b in names for _ in ids],
        "trace_id": [f"t-{b}" for b in names for _ in ids], "line_no": [n * 1000 + j for j in range(len(names)) for _ in ids],
        "event_index": [i for _ in names for i in range(len(ids))],
        "event_id": [f"{i}@{b}" if batches > 1 else i for b in names for i in ids],
        "received_at": [at] * (len(ids) * len(names)),
    }).with_columns(pl.col("received_at").cast(pl.Datetime("us", "UTC")))
    deliveries = valid.select("delivery_key", "received_at").unique()
    return valid, deliveries


def test_duplicates_name_the_batch_that_first_brought_the_id_even_after_stale_batches_are_dropped():
    dd = Deduplicator(window=timedelta(hours=1))
    dd.prune_floor = 500  # drop expired ids and their batches early, to test that too
    # Many batches whose ids all fall out of the window, then one that stays, then its retry.
    for i in range(30):
        dd.run(*_chunk(i, ["old"], f"b{i}", T0 + timedelta(seconds=i), batches=100))
    keep = T0 + timedelta(hours=5)
    dd.run(*_chunk(5_000, ["x1", "x2"], "keeper", keep))
    assert dd.size == 2  # everything older than the window is forgotten
    assert dd._batches.height == 1  # and so are the batches that brought it
    res = dd.run(*_chunk(5_001, ["x2", "x3", "x3"], "retry", keep + timedelta(minutes=5)))
    dups = res.duplicates.sort("event_index")
    assert dups.select("event_id", "duplicate_of_batch", "duplicate_of_trace").rows() == [
        ("x2", "keeper", "t-keeper"), ("x3", "retry", "t-retry")]
    assert res.unique.get_column("event_id").to_list() == ["x3"]
    assert res.per_delivery.row(0, named=True)["duplicates_removed"] == 2


def test_state_read_in_pieces_is_the_same_as_one_frame():
    rows = pl.DataFrame({"event_id": ["a", "b", "c"], "batch_id": ["b1", "b1", "b2"], "trace_id": ["t1", "t1", "t2"],
                         "received_at": [T0] * 3}, schema=STATE_SCHEMA)
    dd = Deduplicator(timedelta(days=7), [rows[:2], rows[2:], rows[:1]])  # "a" twice: still one duplicate below
    res = dd.run(*_chunk(1, ["c", "a", "new"], "b9", T0 + timedelta(minutes=1)))
    assert sorted(res.duplicates.select("event_id", "duplicate_of_batch").rows()) == [("a", "b1"), ("c", "b2")]
    assert res.unique.get_column("event_id").to_list() == ["new"]
    again = dd.run(*_chunk(2, ["new"], "b10", T0 + timedelta(minutes=2)))  # and it is remembered from now on
    assert again.unique.is_empty() and again.duplicates.get_column("duplicate_of_batch").to_list() == ["b9"]


def test_sorted_runs_find_every_key_and_stop_merging_at_their_cap():
    from dqkit.pipeline.dedup import _SortedRuns

    runs = _SortedRuns()
    runs.max_run = 1_000
    keys = pl.DataFrame({"h1": pl.Series(range(5_000), dtype=pl.UInt64).shuffle(seed=1)}).with_columns(
        h2=pl.col("h1") * 7, received_at=pl.lit(T0).cast(pl.Datetime("us", "UTC")), ref=(pl.col("h1") % 97).cast(pl.UInt32))
    for start in range(0, 5_000, 250):
        runs.add(keys[start:start + 250], None)
    assert max(r.height for r in runs.runs) <= 1_000 and runs.height == 5_000
    found = runs.find(keys.select("h1", "h2"), None)
    assert found.to_list() == keys.get_column("ref").to_list()
    other = keys.select("h1", h2=pl.col("h2") + 1)  # same first hash, different second: not the same id
    assert runs.find(other, None).null_count() == 5_000
    assert runs.find(keys.select("h1", "h2"), T0 + timedelta(seconds=1)).null_count() == 5_000  # all expired
