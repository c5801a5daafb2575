"""Resume: which deliveries of a chunk the warehouse already holds (a re-run, or a crash).

Every delivery a replay loads is recorded in the warehouse's ``deliveries`` table in the same
transaction as its rows, so a delivery found there is skipped whole and no count changes.
"""

from __future__ import annotations

import polars as pl

from dqkit.events.readers import RawChunk
from dqkit.pipeline.warehouse import Warehouse

_KEY_SEED = 0xDE11  # hashes of delivery keys, compared within one process only


class KnownDeliveries:
    """The deliveries a warehouse held when a run began, as sorted 64-bit hashes of their keys.

    Keys are unique within a run, so only those need asking; the hashes narrow each chunk
    down to the few candidates asked of DuckDB, instead of scanning every delivery.
    """

    def __init__(self, wh: Warehouse) -> None:
        """Read the hashes of every delivery key in ``wh`` (piece by piece)."""
        self.wh = wh
        self._hashes = pl.concat(
            [b.get_column("delivery_key").hash(seed=_KEY_SEED) for b in wh.read_batches("SELECT delivery_key FROM deliveries")]
            or [pl.Series([], dtype=pl.UInt64)]).sort()

    def of(self, keys: pl.Series) -> set[str]:
        """Those of ``keys`` the warehouse held."""
        if not self._hashes.len():
            return set()
        h = keys.hash(seed=_KEY_SEED)
        at = self._hashes.search_sorted(h, side="left").clip(upper_bound=self._hashes.len() - 1)
        maybe = keys.filter(self._hashes.gather(at) == h)
        return self.wh.known_deliveries(maybe.to_list()) if maybe.len() else set()

    def split(self, chunk: RawChunk) -> tuple[RawChunk, pl.DataFrame]:
        """``chunk`` without the deliveries already held, and those deliveries."""
        known = self.of(chunk.deliveries.get_column("delivery_key"))
        if not known:
            return chunk, chunk.deliveries.clear()
        is_known = pl.col("delivery_key").is_in(list(known))
        rest = RawChunk(chunk.deliveries.filter(~is_known), chunk.events.filter(~is_known), chunk.position)
        return rest, chunk.deliveries.filter(is_known)
