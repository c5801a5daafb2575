"""Geo-IP lookup for IPv4 and IPv6, vectorized over a whole chunk.

The default database is the IPFire Location range table shipped in ``data/geoip`` (country
only). A MaxMind-format ``.mmdb`` (GeoLite2/GeoIP2 City or Country) may be passed instead; it
also resolves region and city, and is read through the ``maxminddb`` reader once per distinct
address in a chunk. A corrupt record in such a file leaves its addresses unresolved, flagged in
``geo_error`` and counted (:attr:`CachedGeoIP.lookup_errors`, span attribute
``geo.lookup_errors``), instead of stopping the replay.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dqkit.errors import InputError
from dqkit.paths import geoip_dir

_TWO64 = 1 << 64
OUT_SCHEMA = {"client_ip": pl.String, "geo_country": pl.String, "geo_region": pl.String, "geo_city": pl.String,
              "geo_error": pl.Boolean}
"""A lookup's result per address; ``geo_error`` marks an address whose record could not be read."""


def parse_ipv4(frame: pl.DataFrame, col: str = "client_ip") -> pl.DataFrame:
    """``frame`` with ``ip_family`` (4 or null) and ``ip_value`` (Int128) for dotted-quad text
    (a zone id such as ``%eth0`` is ignored). The common case, so it is a single regex pass
    and arithmetic on its result: one expression that reused the octets re-ran the regex for
    each use, eight times slower."""
    octets = frame.select(
        pl.col(col).str.strip_chars().str.replace(r"%.*$", "")
        .str.extract_groups(r"^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$").alias("o")
    ).unnest("o")
    o = [pl.col(f"{i + 1}").cast(pl.Int64) for i in range(4)]
    value = octets.select(pl.when(pl.all_horizontal([x <= 255 for x in o])).then(
        o[0] * 16777216 + o[1] * 65536 + o[2] * 256 + o[3])).to_series().cast(pl.Int128)
    return frame.with_columns(ip_family=pl.when(value.is_not_null()).then(pl.lit(4, pl.Int8)), ip_value=value)


def parse_ipv6(frame: pl.DataFrame, col: str = "client_ip") -> pl.DataFrame:
    """``frame`` with ``ip_family`` (4, 6 or null) and ``ip_value`` (Int128) for text with a colon.

    IPv4-mapped IPv6 (``::ffff:a.b.c.d``) counts as IPv4; zone ids (``%eth0``) are ignored.
    Addresses at or above ``8000::`` (multicast, link-local) are left unresolved. Each step is
    its own column: as one expression, every use of the groups re-ran the splitting before it
    (60 µs an address).
    """
    t = frame.select(s=pl.col(col).str.strip_chars().str.to_lowercase().str.replace(r"%.*$", ""))
    mapped = parse_ipv4(t.select(pl.col("s").str.extract(r"^::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)$")), "s")
    s = pl.col("s")
    t = t.with_columns(dc=s.str.contains("::", literal=True), ndc=s.str.count_matches("::", literal=True),
                       halves=s.str.split("::"))
    t = t.with_columns(head=pl.when("dc").then(pl.col("halves").list.get(0, null_on_oob=True)).otherwise(s),
                       tail=pl.when("dc").then(pl.col("halves").list.get(1, null_on_oob=True)).otherwise(pl.lit("")))
    # Around the one "::" (or in the whole text without one) a colon only separates groups:
    # ":::", "1:::2" or a trailing ":" are not addresses.
    t = t.with_columns(edges_ok=~pl.any_horizontal([pl.col(c).str.starts_with(":") | pl.col(c).str.ends_with(":") for c in ("head", "tail")]))
    t = t.with_columns([pl.col(c).str.split(":").list.eval(pl.element().filter(pl.element() != "")).alias(c) for c in ("head", "tail")])
    t = t.with_columns(fill=8 - pl.col("head").list.len().cast(pl.Int64) - pl.col("tail").list.len().cast(pl.Int64))
    t = t.with_columns(groups=pl.concat_list("head", pl.lit("0").repeat_by(pl.col("fill").clip(lower_bound=0)), "tail"))
    t = t.with_columns(ints=pl.col("groups").list.eval(pl.element().str.to_integer(base=16, strict=False)),
                       hex_ok=pl.col("groups").list.eval(pl.element().str.contains(r"^[0-9a-f]{1,4}$")).list.all())
    ok = (s.str.contains(":", literal=True) & (pl.col("ndc") <= 1) & pl.col("edges_ok")
          & pl.when("dc").then(pl.col("fill") >= 1).otherwise(pl.col("fill") == 0)
          & pl.col("hex_ok") & (pl.col("ints").list.get(0, null_on_oob=True) < 0x8000)).fill_null(False)
    v6 = pl.lit(0, pl.Int128)
    for i in range(8):
        v6 = v6 * 65536 + pl.col("ints").list.get(i, null_on_oob=True).cast(pl.Int128)
    v6 = t.select(pl.when(ok).then(v6)).to_series()
    v4 = mapped.get_column("ip_value")
    return frame.with_columns(
        ip_family=pl.when(v4.is_not_null()).then(pl.lit(4, pl.Int8)).when(v6.is_not_null()).then(pl.lit(6, pl.Int8)),
        ip_value=v4.fill_null(v6),
    )


class RangeGeoIP:
    """Country lookup in sorted IPv4/IPv6 range tables (``start``, ``end``, ``country``)."""

    def __init__(self, directory: Path) -> None:
        try:
            v4 = pl.read_parquet(directory / "ipv4.parquet")
            v6 = pl.read_parquet(directory / "ipv6.parquet")
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InputError(f"geo-IP directory {str(directory)!r} needs ipv4.parquet and ipv6.parquet: {exc}") from exc
        self.v4 = v4.select(
            pl.col("start").cast(pl.Int128), pl.col("end").cast(pl.Int128), "country"
        ).sort("start")
        self.v6 = v6.select(
            start=pl.col("start_hi").cast(pl.Int128) * _TWO64 + pl.col("start_lo").cast(pl.Int128),
            end=pl.col("end_hi").cast(pl.Int128) * _TWO64 + pl.col("end_lo").cast(pl.Int128),
            country=pl.col("country"),
        ).sort("start")

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """``client_ip, geo_country, geo_region, geo_city`` for each distinct address (nulls where unknown)."""
        addrs = pl.DataFrame({"client_ip": ips.unique().drop_nulls()})
        # IPv4 text (the common case) skips the costlier IPv6 parsing.
        maybe_v6 = pl.col("client_ip").str.contains(":", literal=True)
        parsed = pl.concat([
            parse_ipv4(addrs.filter(~maybe_v6)),
            parse_ipv6(addrs.filter(maybe_v6)),
        ])
        found = []
        for family, table in ((4, self.v4), (6, self.v6)):
            part = parsed.filter(pl.col("ip_family") == family).sort("ip_value")
            hit = part.join_asof(table, left_on="ip_value", right_on="start", strategy="backward")
            found.append(hit.select("client_ip", geo_country=pl.when(pl.col("ip_value") <= pl.col("end")).then(pl.col("country"))))
        resolved = pl.concat(found)
        return addrs.join(resolved, on="client_ip", how="left").with_columns(
            geo_region=pl.lit(None, pl.String), geo_city=pl.lit(None, pl.String), geo_error=pl.lit(False)
        ).select(list(OUT_SCHEMA))


class MaxMindGeoIP:
    """Lookup in a MaxMind-format database through the maintained ``maxminddb`` reader."""

    def __init__(self, path: Path) -> None:
        import maxminddb

        self._corrupt = maxminddb.InvalidDatabaseError
        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:  # the last is a RuntimeError
            raise InputError(f"--geoip {str(path)!r} is not a MaxMind DB (.mmdb) file ({exc}); pass a GeoLite2 or "
                             "GeoIP2 .mmdb, or a directory with ipv4.parquet and ipv6.parquet") from exc

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """``client_ip, geo_country, geo_region, geo_city`` for each distinct address (nulls where unknown)."""
        rows = []
        for ip in ips.unique().drop_nulls().to_list():  # once per distinct address, not per event
            error = False
            try:
                rec = self.reader.get(ip)
            except self._corrupt:
                rec, error = None, True  # a corrupt record or search tree: unresolved, and counted
            except ValueError:
                rec = None  # not an address, or IPv6 in an IPv4-only database
            rec = rec if isinstance(rec, dict) else {}
            subs = rec.get("subdivisions") or [{}]
            subs = subs if isinstance(subs, list) and subs and isinstance(subs[0], dict) else [{}]
            country, city = rec.get("country"), rec.get("city")
            names = city.get("names") if isinstance(city, dict) else None
            rows.append((
                ip,
                _text(country.get("iso_code") if isinstance(country, dict) else None),
                _text(subs[0].get("iso_code")),
                _text(names.get("en") if isinstance(names, dict) else None),
                error,
            ))
        return pl.DataFrame(rows, schema=OUT_SCHEMA, orient="row")


def _text(value: object) -> str | None:
    # A damaged record can decode to a value of the wrong type (a number where a name belongs).
    return value if isinstance(value, str) else None


class CachedGeoIP:
    """Remembers resolved addresses across chunks: a client keeps its address for a while, so
    most of a chunk's addresses were resolved before. Holds at most ``capacity`` addresses."""

    def __init__(self, inner: RangeGeoIP | MaxMindGeoIP, capacity: int = 500_000) -> None:
        self.inner = inner
        self.capacity = capacity
        self._known = pl.DataFrame(schema=OUT_SCHEMA)
        self.lookup_errors = 0
        """Events (not addresses) whose address's record could not be read, over all lookups."""

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """``client_ip, geo_country, geo_region, geo_city`` for each distinct address (nulls where unknown)."""
        wanted = pl.DataFrame({"client_ip": ips.unique().drop_nulls()}, schema={"client_ip": pl.String})
        new = wanted.join(self._known, on="client_ip", how="anti")
        if new.height:
            self._known = pl.concat([self._known, self.inner.lookup(new.get_column("client_ip"))])
        found = wanted.join(self._known, on="client_ip", how="left")
        failed = found.filter(pl.col("geo_error")).get_column("client_ip")
        if failed.len():
            self.lookup_errors += int(ips.is_in(failed.implode()).sum())
        if self._known.height > self.capacity:  # forget the oldest half
            self._known = self._known.tail(self.capacity // 2)
        return found


def open_geoip(path: str | Path | None = None) -> CachedGeoIP:
    """The bundled range tables, a directory of them, or a ``.mmdb`` file."""
    if path is None:
        return CachedGeoIP(RangeGeoIP(geoip_dir()))
    p = Path(path)
    if p.is_dir():
        return CachedGeoIP(RangeGeoIP(p))
    if p.is_file():
        return CachedGeoIP(MaxMindGeoIP(p))
    raise InputError(f"--geoip {str(p)!r} does not exist; pass a .mmdb file or a directory with ipv4.parquet and ipv6.parquet")
