import json
import re
import subprocess
import sys

from tests.conftest import batch, event, write_lines


def dqkit(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dqkit.cli", *args], capture_output=True, text=True, **kw)


def test_every_command_lists_its_options_and_shows_an_example():
    import click
    from click.testing import CliRunner

    from dqkit.cli import main

    top = CliRunner().invoke(main, ["--help"])
    assert top.exit_code == 0
    assert set(main.commands) >= {"demo", "generate", "replay", "reconcile", "diagnose", "explain", "report"}
    for name, cmd in main.commands.items():
        assert re.search(rf"^  {name} ", top.output, re.M), f"dqkit --help does not list {name}"
        out = CliRunner().invoke(main, [name, "--help"], terminal_width=200)
        assert out.exit_code == 0, out.output
        for p in cmd.params:
            if isinstance(p, click.Option) and p.hidden:
                continue  # internal flags (e.g. consume's --stop-on-stdin-eof, set by `dqkit serve`) stay out of --help
            if isinstance(p, click.Option):
                assert all(o in out.output for o in p.opts), f"dqkit {name} --help lacks {p.opts}"
                assert p.help and p.help.split()[0] in out.output, f"dqkit {name} --help: {p.opts} has no help"
            else:
                assert p.name.upper() in out.output, f"dqkit {name} --help lacks its argument {p.name}"
        example = re.search(rf"^\s*Example:\s*\n\s+(dqkit {name} .+)$", out.output, re.M)
        assert example, f"dqkit {name} --help shows no example command"
        # The example's options are the command's own.
        used = set(re.findall(r"(?<=\s)(--?[a-z][a-z-]*)", example.group(1)))
        known = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        assert used <= known, f"dqkit {name}'s example uses unknown options {used - known}"
    rep = CliRunner().invoke(main, ["replay", "--help"])
    assert "OTEL_EXPORTER_OTLP_" in rep.output, "replay --help says how to send telemetry to a collector"


def test_bad_path_is_one_line_error(tmp_path):
    out = dqkit("replay", str(tmp_path / "missing.ndjson"), "-w", str(tmp_path / "w.duckdb"), "-t", str(tmp_path / "t"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_replay_json_summary(tmp_path):
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1"), event("e2", ts="bad")])])
    out = dqkit("replay", str(sample), "-w", str(tmp_path / "w.duckdb"), "-t", str(tmp_path / "t"), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ledger"] == {"received": 2, "loaded": 1, "invalid": 1, "duplicate": 0, "dead_lettered": 0,
                             "in_flight": 0, "unaccounted": 0}


def test_demo_runs_and_reruns_idempotently(tmp_path):
    out = dqkit("demo", "--out", str(tmp_path / "demo"), "--events", "3000", "--users", "200")
    assert out.returncode == 0, out.stderr
    assert re.search(r"unaccounted\s+0\n", out.stdout), out.stdout
    again = dqkit("demo", "--out", str(tmp_path / "demo"), "--events", "3000", "--users", "200")
    assert "skipped" in again.stdout and re.search(r"received\s+0\n", again.stdout), again.stdout


# -- unusable warehouse files: one line, exit 2, for every command that opens one ---------------

import pytest
from click.testing import CliRunner

from dqkit.cli import main


def cli(*args):
    """Run the CLI in-process; stderr is kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, *words):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    err = res.stderr.strip()
    assert err.startswith("dqkit: error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A real warehouse and telemetry folder from a small replay."""
    from dqkit.pipeline.run import replay

    d = tmp_path_factory.mktemp("replayed")
    sample = write_lines(d / "s.ndjson", [batch(f"b-{i}", [event(f"e{i}-{j}", user=f"u_{j}") for j in range(5)])
                                          for i in range(20)])
    replay(sample, d / "wh.duckdb", d / "tel")
    return d


def _commands(wh, tel, sample):
    return {
        "replay": ["replay", sample, "-w", wh, "-t", tel.parent / "tel2"],
        "reconcile": ["reconcile", "-w", wh, "-s", tel],
        "diagnose": ["diagnose", "-w", wh, "--day", "2026-11-20"],
        "explain": ["explain", "-w", wh, "--event-id", "e1-1"],
        "report": ["report", "-w", wh, "-s", tel, "--day", "2026-11-20", "--out", tel.parent / "never"],
    }


@pytest.mark.parametrize("command", ["replay", "reconcile", "diagnose", "explain", "report"])
def test_truncated_warehouse_is_one_line_error(replayed, tmp_path, command):
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes((replayed / "wh.duckdb").read_bytes()[:1000])
    err = one_line_error(cli(*_commands(cut, replayed / "tel", replayed / "s.ndjson")[command]),
                         str(cut), "is not a DuckDB database", "pass the .duckdb file")
    assert "IO Error" not in err
    assert cut.stat().st_size == 1000  # nothing was written over it


@pytest.mark.parametrize("command", ["replay", "reconcile", "diagnose", "explain", "report"])
def test_other_kind_of_file_as_warehouse_is_one_line_error(replayed, tmp_path, command):
    other = tmp_path / "notes.duckdb"
    other.write_text("not a database\n")
    one_line_error(cli(*_commands(other, replayed / "tel", replayed / "s.ndjson")[command]), "is not a DuckDB database")


@pytest.mark.parametrize("command", ["replay", "reconcile", "diagnose", "explain", "report"])
def test_directory_as_warehouse_says_so(replayed, command):
    one_line_error(cli(*_commands(replayed, replayed / "tel", replayed / "s.ndjson")[command]),
                   "is a directory", "pass the .duckdb file inside it")


@pytest.mark.parametrize("command", ["diagnose", "reconcile"])
def test_missing_span_export_is_named(replayed, tmp_path, command):
    args = [command, "-w", replayed / "wh.duckdb", "-s", replayed / "tel", "-s", tmp_path / "nope"]
    if command == "diagnose":
        args += ["--day", "2026-11-20"]
    one_line_error(cli(*args), str(tmp_path / "nope"), "not found")
    (tmp_path / "empty").mkdir()
    one_line_error(cli(*[a if a != tmp_path / "nope" else tmp_path / "empty" for a in args]), "no traces*.json")


def test_diagnose_reads_the_spans_it_is_given(replayed):
    res = cli("diagnose", "-w", replayed / "wh.duckdb", "-s", replayed / "tel", "--day", "2026-11-20", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["dau"]["warehouse"] == 5


@pytest.mark.parametrize("command", [
    ["diagnose", "--day"], ["diagnose", "--day", "2026-11-20", "--baseline-day"],
    ["explain", "--user-id", "u_1", "--day"], ["report", "--day"],
])
def test_a_day_in_another_format_gets_the_format_hint(replayed, tmp_path, command):
    args = [*command, "11-27-2026"]
    if command[0] != "report":
        args += ["-w", replayed / "wh.duckdb"]
    else:
        args += ["--out", tmp_path / "rep"]
    option = command[-1]
    one_line_error(cli(*args), f"{option} '11-27-2026'", "YYYY-MM-DD", "e.g. 2026-11-20")
    assert not (tmp_path / "rep").exists()


def test_explain_user_day_still_works(replayed):
    res = cli("explain", "-w", replayed / "wh.duckdb", "--user-id", "u_1", "--day", "2026-11-20", "--json")
    assert res.exit_code == 0, res.stderr
    assert {r["event_id"] for r in json.loads(res.stdout)} == {f"e{i}-1" for i in range(20)}


@pytest.mark.parametrize("flag", ["-s", "--spans", "-t", "--telemetry"])
def test_readers_of_telemetry_take_either_flag(replayed, flag):
    res = cli("reconcile", "-w", replayed / "wh.duckdb", flag, replayed / "tel", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["totals"]["received"] == 100
    res = cli("diagnose", "-w", replayed / "wh.duckdb", flag, replayed / "tel", "--day", "2026-11-20", "--json")
    assert res.exit_code == 0, res.stderr


def test_report_help_shows_both_telemetry_flags():
    for command in ("reconcile", "diagnose", "report"):
        text = cli(command, "--help").stdout
        assert "-s, -t, --spans, --telemetry PATH" in text, text


def test_max_event_age_lets_a_backfill_load(tmp_path):
    # Stamped 60 days before the batch arrived: ancient under the default 30 days.
    sample = write_lines(tmp_path / "old.ndjson", [batch("b-1", [event("e1", ts="2026-09-21T10:00:00Z"),
                                                                 event("e2", ts="2025-09-21T10:00:00Z")])])
    res = cli("replay", sample, "-w", tmp_path / "a.duckdb", "-t", tmp_path / "ta", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["ledger"]["invalid"] == 2
    res = cli("replay", sample, "-w", tmp_path / "b.duckdb", "-t", tmp_path / "tb", "--max-event-age", "90d", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["ledger"] == {"received": 2, "loaded": 1, "invalid": 1, "duplicate": 0,
                                                     "dead_lettered": 0, "in_flight": 0, "unaccounted": 0}
    import duckdb

    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    assert con.execute("SELECT event_id, reason FROM rejected_events").fetchall() == [("e2", "ancient_timestamp")]
    con.close()
    one_line_error(cli("replay", sample, "-w", tmp_path / "c.duckdb", "-t", tmp_path / "tc", "--max-event-age", "a year"),
                   "--max-event-age='a year'", "e.g. 90s")
    assert "--max-event-age" in cli("replay", "--help").stdout


# -- a fault or scenario that matched nothing is a typo until shown otherwise -------------------

def test_fault_that_matches_nothing_is_named_and_exits_4(replayed, tmp_path):
    sample = replayed / "s.ndjson"
    windows = "geoip_outage:platform=windows"
    early = "profile_outage:start=2020-01-01T00:00:00Z,duration=1h"
    res = cli("replay", sample, "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t", "--json",
              "--fault", windows, "--fault", early, "--fault", "geoip_outage:platform=ios")
    assert res.exit_code == 4, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)  # the run is complete and reported
    assert doc["ledger"]["loaded"] == 100
    assert {f["spec"]: f["events"] for f in doc["faults"]} == {windows: 0, early: 0, "geoip_outage:platform=ios": 100}
    warnings = res.stderr.strip().splitlines()
    assert warnings == [f"dqkit: warning: --fault {windows!r} matched no events; check its window and platform against the sample",
                        f"dqkit: warning: --fault {early!r} matched no events; check its window and platform against the sample"]
    ok = cli("replay", sample, "-w", tmp_path / "w2.duckdb", "-t", tmp_path / "t2", "--fault", "geoip_outage:platform=ios")
    assert ok.exit_code == 0 and "warning" not in ok.stderr, ok.stderr


def test_scenario_that_matches_nothing_is_named_and_exits_4(tmp_path):
    spec = "sdk_bad_timestamps:platform=windows"
    res = cli("generate", "--out", tmp_path / "g", "--events", "500", "--users", "50", "--scenario", spec,
              "--scenario", "bot_burst:magnitude=2")
    assert res.exit_code == 4, (res.stdout, res.stderr)
    assert (tmp_path / "g" / "events.ndjson.gz").is_file()
    assert res.stderr.strip() == (f"dqkit: warning: --scenario {spec!r} matched no events; check its window and segment "
                                  "against the sample")
    truth = json.loads((tmp_path / "g" / "truth.json").read_text())
    assert [s["events"] > 0 for s in truth["scenarios"]] == [False, True]


def test_csv_sample_is_refused_before_anything_is_written(tmp_path):
    csv = tmp_path / "events.csv"
    csv.write_text("event_id,event_type,user_id,timestamp\ne1,view,u1,2026-11-20T10:00:00Z\n")
    one_line_error(cli("replay", csv, "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t"), str(csv), "not NDJSON")
    assert not (tmp_path / "w.duckdb").exists() and not (tmp_path / "t").exists()


def test_empty_sample_warns_and_exits_4(tmp_path):
    (tmp_path / "empty.ndjson").write_text("\n\n")
    res = cli("replay", tmp_path / "empty.ndjson", "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t")
    assert res.exit_code == 4, (res.stdout, res.stderr)
    assert res.stderr.strip() == (f"dqkit: warning: sample {str(tmp_path / 'empty.ndjson')!r} holds no events "
                                  "(it is empty or only blank lines); nothing was replayed")


def test_geoip_file_that_is_not_a_maxmind_db_is_one_line_error(replayed, tmp_path):
    notes = tmp_path / "geo.mmdb"
    notes.write_text("country,start,end\n")
    one_line_error(cli("replay", replayed / "s.ndjson", "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t", "--geoip", notes),
                   f"--geoip {str(notes)!r} is not a MaxMind DB")


def test_damaged_geoip_records_are_reported_after_the_replay(tmp_path):
    from pathlib import Path

    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1", ip="81.2.69.142"), event("e2", ip="8.8.8.8")])])
    broken = Path(__file__).parent / "cases" / "geoip" / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    res = cli("replay", sample, "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t", "--geoip", broken, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["geo_lookup_errors"] == 1 and doc["ledger"]["loaded"] == 2
    text = cli("replay", sample, "-w", tmp_path / "w2.duckdb", "-t", tmp_path / "t2", "--geoip", broken)
    assert "warning: 1 events loaded without geo" in text.stderr


def test_rerun_with_faults_that_found_everything_loaded_exits_0(replayed, tmp_path):
    args = ["replay", replayed / "s.ndjson", "-w", tmp_path / "w.duckdb", "-t", tmp_path / "t", "--fault", "geoip_outage"]
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 0 and "warning" not in again.stderr, again.stderr
