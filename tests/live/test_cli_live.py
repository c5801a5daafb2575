"""``dqkit serve`` and ``dqkit consume``: bad arguments get a one-line error and exit 2."""

from __future__ import annotations

from click.testing import CliRunner

from dqkit.cli import main
from dqkit.live.queues import parse_queue


def test_bad_queue_is_a_clear_error(tmp_path):
    for cmd in (["serve", "-w", str(tmp_path / "wh.duckdb"), "-t", str(tmp_path / "tel"), "--queue", "rabbit://x"],
                ["consume", "-w", str(tmp_path / "wh.duckdb"), "-t", str(tmp_path / "tel"), "--queue", "kafka://host:9092/"]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 2, r.output
        assert r.output.startswith("dqkit: error: --queue") and "kafka://HOST:PORT/TOPIC" in r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "wh.duckdb").exists()


def test_bad_numbers(tmp_path):
    r = CliRunner().invoke(main, ["serve", "-w", str(tmp_path / "w"), "-t", str(tmp_path / "t"), "--consumers", "-1"])
    assert r.exit_code == 2 and r.output.startswith("dqkit: error:")


def test_queue_specs(tmp_path):
    assert parse_queue("embedded", tmp_path / "wh.duckdb").path == tmp_path / "wh.duckdb.queue"
    assert parse_queue("embedded:/var/q", tmp_path / "w").path.as_posix() == "/var/q"
    k = parse_queue("kafka://10.0.0.1:9092,10.0.0.2:9092/events", tmp_path / "w")
    assert (k.system, k.bootstrap, k.topic) == ("kafka", "10.0.0.1:9092,10.0.0.2:9092", "events")


def test_second_server_on_the_same_log_is_refused(tmp_path):
    from dqkit.live.queues import LogSink

    first = LogSink(tmp_path / "q")
    try:
        r = CliRunner().invoke(main, ["serve", "-w", str(tmp_path / "wh.duckdb"), "-t", str(tmp_path / "tel"),
                                      "--queue", f"embedded:{tmp_path / 'q'}", "--consumers", "0"])
        assert r.exit_code == 2 and "in use by another dqkit serve" in r.output, r.output
    finally:
        first.close()
