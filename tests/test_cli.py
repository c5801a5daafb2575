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
