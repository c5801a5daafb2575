"""Where dqkit's bundled data lives, in a source checkout or an installed package."""

from __future__ import annotations

from pathlib import Path

from dqkit.errors import InputError


def data_dir(name: str, marker: str) -> Path:
    """The bundled data folder ``data/<name>`` that holds ``marker``.

    Raises:
        InputError: neither a source checkout nor the installed package has it.
    """
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "data" / name, here.parent / "data" / name):
        if (base / marker).is_file():
            return base
    raise InputError(f"the bundled data folder data/{name} is missing; reinstall dqkit")


def geoip_dir() -> Path:
    """The bundled geo-IP range tables (``ipv4.parquet``, ``ipv6.parquet``)."""
    try:
        return data_dir("geoip", "ipv4.parquet")
    except InputError:
        raise InputError("the bundled geo-IP tables are missing; reinstall dqkit or pass --geoip PATH") from None
