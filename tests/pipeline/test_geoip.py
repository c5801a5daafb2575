import polars as pl
import pytest

from dqkit.errors import InputError
from dqkit.pipeline.geoip import open_geoip, parse_ipv4, parse_ipv6


def test_bundled_tables_resolve_ipv4_and_ipv6():
    g = open_geoip()
    got = dict(g.lookup(pl.Series(["8.8.8.8", "81.2.69.142", "2a00:1450:4001:82a::200e", "::ffff:8.8.8.8",
                                    "300.1.1.1", "garbage", "fe80::1", "1:2:3:4:5:6:7:8:9", "203.0.113.7"]))
               .select("client_ip", "geo_country").iter_rows())
    assert got["8.8.8.8"] == "US" and got["::ffff:8.8.8.8"] == "US"
    assert got["81.2.69.142"] == "GB"
    assert got["2a00:1450:4001:82a::200e"] == "IE"
    for bad in ("300.1.1.1", "garbage", "fe80::1", "1:2:3:4:5:6:7:8:9", "203.0.113.7"):
        assert got[bad] is None, bad


def test_ipv4_text_is_parsed_strictly():
    cases = {"8.8.8.8": 134744072, " 8.8.8.8 ": 134744072, "8.8.8.8%eth0": 134744072, "01.2.3.4": 16909060,
             "0.0.0.0": 0, "255.255.255.255": 4294967295, "256.1.1.1": None, "1.2.3": None, "1.2.3.4.5": None,
             "1..2.3": None, "a.b.c.d": None, "": None, "\uff11.2.3.4": None, "1.2.3.4444": None, None: None}
    got = parse_ipv4(pl.DataFrame({"client_ip": list(cases)}, schema={"client_ip": pl.String}))
    assert dict(zip(cases, got.get_column("ip_value").to_list())) == cases
    assert got.get_column("ip_family").to_list() == [None if v is None else 4 for v in cases.values()]


def test_ipv6_text_is_parsed_strictly():
    v6 = lambda *groups: sum(g << (16 * (7 - i)) for i, g in enumerate(groups))  # noqa: E731
    cases = {
        "2001:db8::": (6, v6(0x2001, 0xDB8, 0, 0, 0, 0, 0, 0)), " 2001:DB8::1 ": (6, v6(0x2001, 0xDB8, 0, 0, 0, 0, 0, 1)),
        "::1": (6, 1), "::": (6, 0), "7fff::1": (6, v6(0x7FFF, 0, 0, 0, 0, 0, 0, 1)),
        "1:2:3:4:5:6:7:8": (6, v6(1, 2, 3, 4, 5, 6, 7, 8)), "2a00:1450::200e%wlan0": (6, v6(0x2A00, 0x1450, 0, 0, 0, 0, 0, 0x200E)),
        "::ffff:8.8.8.8": (4, 134744072), "::FFFF:1.2.3.4": (4, 16909060),
        "8000::1": (None, None), "fe80::1%eth0": (None, None), "1:2:3:4:5:6:7:8:9": (None, None), "1:2:3:4:5:6:7": (None, None),
        "1::2::3": (None, None), "12345::1": (None, None), "g::1": (None, None), ":::": (None, None),
        "1:::2": (None, None), "1:2:3:4:5:6:7:8:": (None, None), ":1:2:3:4:5:6:7:8": (None, None), "1::2:": (None, None),
        "::ffff:300.1.1.1": (None, None), None: (None, None),
    }
    got = parse_ipv6(pl.DataFrame({"client_ip": list(cases)}, schema={"client_ip": pl.String}))
    assert dict(zip(cases, got.select("ip_family", "ip_value").rows())) == cases


def test_the_address_cache_answers_as_the_tables_do_when_it_overflows():
    g = open_geoip()
    g.capacity = 4
    lookups = [["8.8.8.8", "81.2.69.142"], ["8.8.8.8", "garbage", "2a00:1450:4001:82a::200e", "1.1.1.1", "9.9.9.9"],
               ["81.2.69.142", "8.8.8.8", None]]
    for ips in lookups:
        got = dict(g.lookup(pl.Series(ips, dtype=pl.String)).select("client_ip", "geo_country").iter_rows())
        want = dict(g.inner.lookup(pl.Series(ips, dtype=pl.String)).select("client_ip", "geo_country").iter_rows())
        assert got == want and set(got) == {ip for ip in ips if ip}
    assert g._known.height <= g.capacity


def test_maxmind_database(tmp_path):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    w.insert_network(IPSet(["1.2.3.0/24"]), {"country": {"iso_code": "NZ"}, "subdivisions": [{"iso_code": "AUK"}],
                                             "city": {"names": {"en": "Auckland"}}})
    w.insert_network(IPSet(["2001:db8::/32"]), {"country": {"iso_code": "CH"}})
    path = tmp_path / "city.mmdb"
    w.to_db_file(str(path))
    found = open_geoip(path).lookup(pl.Series(["1.2.3.4", "2001:db8::5", "9.9.9.9", "nope"]))
    assert not found["geo_error"].any()
    got = {r[0]: r[1:] for r in found.select("client_ip", "geo_country", "geo_region", "geo_city").iter_rows()}
    assert got["1.2.3.4"] == ("NZ", "AUK", "Auckland")
    assert got["2001:db8::5"] == ("CH", None, None)
    assert got["9.9.9.9"] == (None, None, None) and got["nope"] == (None, None, None)


def test_missing_geoip_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_geoip(tmp_path / "nope.mmdb")


# -- damaged MaxMind databases (MaxMind's own test data, tests/cases/geoip/) --------------------

from pathlib import Path  # noqa: E402

from tests.conftest import assert_balanced, batch, event, write_lines  # noqa: E402

BROKEN = Path(__file__).parents[1] / "cases" / "geoip"


@pytest.mark.parametrize("name", ["GeoIP2-City-Test-Invalid-Node-Count.mmdb", "notes.mmdb", "ipv4.parquet"])
def test_a_file_that_is_not_a_maxmind_db_is_an_input_error(tmp_path, name):
    path = BROKEN / name if (BROKEN / name).exists() else tmp_path / name
    if not path.exists():
        path.write_bytes(b"PAR1 not a MaxMind database" if name.endswith(".parquet") else b"just some notes\n")
    with pytest.raises(InputError, match="is not a MaxMind DB") as err:
        open_geoip(path)
    assert str(path) in str(err.value) and "ipv4.parquet and ipv6.parquet" in str(err.value)


def test_corrupt_records_degrade_to_unresolved_and_are_counted():
    # In this database the records of MaxMind's City test networks decode to bad data.
    g = open_geoip(BROKEN / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    ips = pl.Series(["81.2.69.142", "81.2.69.142", "2001:218::1", "8.8.8.8", "nope", None])
    got = {r[0]: r[1:] for r in g.lookup(ips).iter_rows()}
    assert got["81.2.69.142"] == (None, None, None, True)
    assert got["2001:218::1"] == (None, None, None, True)
    assert got["8.8.8.8"] == (None, None, None, False)  # not in the database: unresolved, not an error
    assert got["nope"] == (None, None, None, False)
    assert g.lookup_errors == 3  # events, not addresses
    g.lookup(pl.Series(["81.2.69.142"]))  # from the cache: still counted
    assert g.lookup_errors == 4


def test_broken_pointers_and_search_tree_are_lookup_errors():
    g = open_geoip(BROKEN / "MaxMind-DB-test-broken-pointers-24.mmdb")
    got = dict(g.lookup(pl.Series(["1.1.1.1", "1.1.1.16", "1.1.1.32", "::1"])).select("client_ip", "geo_error").iter_rows())
    assert got == {"1.1.1.1": False, "1.1.1.16": True, "1.1.1.32": True, "::1": False}


def test_replay_with_a_damaged_database_loads_everything_and_counts_the_failed_lookups(tmp_path, run_sample):
    sample = write_lines(tmp_path / "s.ndjson", [
        batch("b-1", [event("e1", ip="81.2.69.142"), event("e2", ip="81.2.69.142"), event("e3", ip="8.8.8.8")]),
        batch("b-2", [event("e4", ip="8.8.8.8")]),
    ])
    run = run_sample(sample, geoip=BROKEN / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    assert run.result.ledger.loaded == 4 and run.result.geo_lookup_errors == 2
    assert run.sql("SELECT count(*) FROM events WHERE geo_country IS NULL") == [(4,)]
    spans = run.spans().con.sql(
        "SELECT attrs['geo.lookup_errors'], attrs['geo.unresolved'] FROM spans WHERE name = 'analytics.enrich.geo_ip' "
        "ORDER BY 1").fetchall()
    assert spans == [("0", "1"), ("2", "3")]
    assert_balanced(run)
