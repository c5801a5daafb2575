"""Build dqkit's compact geo-IP range tables from Tor's geoip files.

The inputs are the plain range files that Debian's ``tor-geoipdb`` package ships
(``/usr/share/tor/geoip`` and ``/usr/share/tor/geoip6``), converted by Tor from the IPFire
Location database (CC BY-SA 4.0). Adjacent ranges of the same country are merged and
unallocated (``??``) ranges dropped, then written as Parquet.

Usage::

    apt-get download tor-geoipdb && dpkg-deb -x tor-geoipdb_*.deb /tmp/geo
    python tools/build_geoip.py /tmp/geo/usr/share/tor data/geoip
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import polars as pl

_MASK64 = (1 << 64) - 1


def _merge(df: pl.DataFrame) -> pl.DataFrame:
    """Merge runs of contiguous ranges that map to the same country."""
    df = df.filter(pl.col("country") != "??").sort("start")
    new_run = (pl.col("country") != pl.col("country").shift(1)) | (
        pl.col("start") != pl.col("end").shift(1) + 1
    )
    return (
        df.with_columns(new_run.fill_null(True).cum_sum().alias("run"))
        .group_by("run", maintain_order=True)
        .agg(pl.col("start").first(), pl.col("end").last(), pl.col("country").first())
        .drop("run")
    )


def _read(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, c = line.split(",")
            rows.append((a, b, c))
    return rows


def build(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    v4 = pl.DataFrame(
        [(int(a), int(b), c) for a, b, c in _read(src / "geoip")],
        schema={"start": pl.Int64, "end": pl.Int64, "country": pl.String},
        orient="row",
    )
    v4 = _merge(v4).with_columns(pl.col("start", "end").cast(pl.UInt32))
    v4.write_parquet(out / "ipv4.parquet", compression="zstd", compression_level=19)

    v6_rows = [
        (int(ipaddress.IPv6Address(a)), int(ipaddress.IPv6Address(b)), c)
        for a, b, c in _read(src / "geoip6")
    ]
    v6 = pl.DataFrame(
        {
            "start_hi": [a >> 64 for a, _, _ in v6_rows],
            "start_lo": [a & _MASK64 for a, _, _ in v6_rows],
            "end_hi": [b >> 64 for _, b, _ in v6_rows],
            "end_lo": [b & _MASK64 for _, b, _ in v6_rows],
            "country": [c for _, _, c in v6_rows],
        },
        schema={
            "start_hi": pl.UInt64, "start_lo": pl.UInt64,
            "end_hi": pl.UInt64, "end_lo": pl.UInt64, "country": pl.String,
        },
    )
    v6 = v6.with_columns(
        start=pl.col("start_hi").cast(pl.Int128) * (1 << 64) + pl.col("start_lo").cast(pl.Int128),
        end=pl.col("end_hi").cast(pl.Int128) * (1 << 64) + pl.col("end_lo").cast(pl.Int128),
    ).select("start", "end", "country")
    v6 = _merge(v6).select(
        start_hi=(pl.col("start") // (1 << 64)).cast(pl.UInt64),
        start_lo=(pl.col("start") % (1 << 64)).cast(pl.UInt64),
        end_hi=(pl.col("end") // (1 << 64)).cast(pl.UInt64),
        end_lo=(pl.col("end") % (1 << 64)).cast(pl.UInt64),
        country=pl.col("country"),
    )
    v6.write_parquet(out / "ipv6.parquet", compression="zstd", compression_level=19)
    print(f"ipv4: {v4.height} ranges, ipv6: {v6.height} ranges -> {out}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
