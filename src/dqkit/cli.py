"""The ``dqkit`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dqkit.errors import DqkitError


def _fail(exc: Exception) -> None:
    click.echo(f"dqkit: error: {exc}", err=True)
    sys.exit(2)


def _echo_json(doc, as_json: bool) -> bool:
    """Print ``doc`` as JSON when ``--json`` was given (the commands' machine-readable form)."""
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    return as_json


def _ledger_table(result) -> str:
    lg = result.ledger
    rows = [
        ("received", lg.received), ("loaded", lg.loaded), ("rejected: invalid", lg.invalid),
        ("rejected: duplicate", lg.duplicate), ("dead-lettered", lg.dead_lettered), ("in flight", lg.in_flight),
        ("unaccounted", lg.unaccounted),
    ]
    out = [f"  {k:<22}{v:>12,}" for k, v in rows]
    if result.skipped_deliveries:
        out.append(f"  (skipped {result.skipped_deliveries:,} batches / {result.skipped_events:,} events already in the warehouse)")
    return "\n".join(out)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dqkit")
def main() -> None:
    """dqkit: is the DAU drop real, or did the pipeline lose or delay events?

    Replay event samples through a traced ingest-to-warehouse pipeline (DuckDB + OpenTelemetry),
    then investigate spans against warehouse counts.
    """


@main.command()
@click.argument("sample", type=click.Path(path_type=Path))
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB file to load into (created if missing).")
@click.option("--telemetry", "-t", required=True, type=click.Path(path_type=Path), help="Folder for traces.jsonl and metrics.jsonl (OTLP/JSON lines).")
@click.option("--profiles", type=click.Path(path_type=Path), help="User profiles: CSV or Parquet with user_id, country, segment, signup_date.")
@click.option("--geoip", type=click.Path(path_type=Path), help="A MaxMind .mmdb file, or a directory of range tables (default: bundled IPFire data).")
@click.option("--chunk-lines", default=10_000, show_default=True,  # = readers.DEFAULT_CHUNK_LINES (not imported: --help stays fast)
               help="Client batches processed together (bounds memory; a chunk also ends after 32 MB of input). Up to three chunks are in memory at once: one being read, one in the stages, one having its spans written.")
@click.option("--load-interval", default=60.0, show_default=True, help="Warehouse load cadence in seconds, on the replay clock.")
@click.option("--fault", "faults", multiple=True, metavar="NAME[:key=value,...]",
              help="Inject a pipeline fault (repeatable); grammar below.")
@click.option("--truth", type=click.Path(path_type=Path),
              help="Where to write what the faults did (JSON); default: next to the warehouse, *.faults.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def replay(sample, warehouse, telemetry, profiles, geoip, chunk_lines, load_interval, faults, truth, as_json) -> None:
    """Replay SAMPLE (NDJSON[.gz] of native or Segment batches, or flat Parquet) into the warehouse.

    Every event is accounted for: loaded, rejected as invalid, removed as duplicate,
    dead-lettered, or in flight. Re-running a sample changes no count. Set the standard
    OTEL_EXPORTER_OTLP_* variables to also send spans and metrics to a collector.

    \b
    Faults: --fault NAME[:key=value,...], repeatable.
      NAME      geoip_outage | profile_outage | profile_slow | insert_failure | queue_backlog
      start     ISO-8601 UTC on the sample's timeline (2026-10-08T08:00:00Z)
      end       ISO-8601 UTC, or duration=90m|4h|2d from start (default: whole replay)
      rate      0..1 share of events / batches / inserts hit (default 1)
      table     events_<type> (insert_failure)
      delay     30s|15m|5h (profile_slow, queue_backlog: required)
      platform  only batches from this client platform
    Example: --fault insert_failure:table=events_like,start=2026-10-08T08:00:00Z,end=2026-10-08T20:00:00Z
    """
    from tqdm import tqdm

    from dqkit.events.readers import sample_size
    from dqkit.pipeline.faults import parse_fault
    from dqkit.pipeline.run import ReplayConfig
    from dqkit.pipeline.run import replay as run_replay

    if chunk_lines < 1:
        _fail(ValueError("--chunk-lines must be at least 1"))
    if load_interval <= 0:
        _fail(ValueError("--load-interval must be a positive number of seconds"))
    try:
        parsed = tuple(parse_fault(f) for f in faults)
        truth_path = truth or (Path(warehouse).with_suffix(".faults.json") if parsed else None)
        total = sample_size(sample) if Path(sample).is_file() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc="replay", disable=as_json or None, file=sys.stderr) as bar:
            def progress(pos, ledger):
                bar.update(pos - bar.n)
                bar.set_postfix(events=f"{ledger.received:,}", refresh=False)

            result = run_replay(sample, warehouse, telemetry, profiles=profiles, geoip=geoip,
                                config=ReplayConfig(chunk_lines=chunk_lines, load_interval_s=load_interval,
                                                    faults=parsed, truth_path=truth_path), progress=progress)
    except DqkitError as exc:
        _fail(exc)
    _print_result(result, as_json)


def _print_result(result, as_json: bool) -> None:
    lg = result.ledger
    if as_json:
        click.echo(json.dumps({
            "run_id": result.run_id, "warehouse": str(result.warehouse),
            "telemetry": str(result.telemetry_dir) if result.telemetry_dir else None,
            "ledger": {"received": lg.received, "loaded": lg.loaded, "invalid": lg.invalid, "duplicate": lg.duplicate,
                       "dead_lettered": lg.dead_lettered, "in_flight": lg.in_flight, "unaccounted": lg.unaccounted},
            "skipped_deliveries": result.skipped_deliveries, "skipped_events": result.skipped_events,
            "seconds": round(result.seconds, 3), "events_per_second": round(result.events_per_second, 1),
            "spans_written": result.telemetry.spans_written, "spans_sent": result.telemetry.spans_sent,
            "spans_not_exported": result.telemetry.spans_not_exported,
        }, indent=2))
        return
    click.echo(f"Replayed {result.deliveries:,} batches in {result.seconds:.1f}s ({result.events_per_second:,.0f} events/s)")
    click.echo(_ledger_table(result))
    click.echo(f"warehouse: {result.warehouse}")
    if result.telemetry_dir:
        click.echo(f"telemetry: {result.telemetry_dir}/traces.jsonl, metrics.jsonl ({result.telemetry.spans_written:,} spans)")
    for f in result.faults:
        click.echo(f"fault {f['name']}: {f['events']:,} events, {f['users']:,} users ({f['stage']}, {f['kind']})")
    if result.telemetry.spans_not_exported:
        click.echo(f"warning: {result.telemetry.spans_not_exported:,} spans could not be sent to the OTLP collector", err=True)


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB file the consumers load into (created if missing).")
@click.option("--telemetry", "-t", required=True, type=click.Path(path_type=Path), help="Folder for the spans and metrics (OTLP/JSON lines).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8088, show_default=True, help="Port to listen on.")
@click.option("--queue", "queue", default="embedded", show_default=True, metavar="embedded|embedded:PATH|kafka://HOST:PORT/TOPIC",
              help="Where accepted requests wait for the consumers: a log folder beside the warehouse, or a Kafka topic.")
@click.option("--consumers", default=1, show_default=True,
              help="Consumer processes to start: one loads the warehouse, the others stand by to take over; 0 to run `dqkit consume` yourself.")
@click.option("--write-key", envvar="DQKIT_WRITE_KEY", help="Require this write key (HTTP Basic username, as Segment's SDKs send it). Env: DQKIT_WRITE_KEY.")
@click.option("--max-body-kb", default=1024, show_default=True, help="Largest request body in KiB, after decompression (413 beyond).")
@click.option("--profiles", type=click.Path(path_type=Path), help="User profiles for the consumers (CSV or Parquet).")
@click.option("--geoip", type=click.Path(path_type=Path), help="Geo-IP data for the consumers (.mmdb or range tables).")
def serve(warehouse, telemetry, host, port, queue, consumers, write_key, max_body_kb, profiles, geoip) -> None:
    """Run the HTTP ingestion endpoint: Segment's API (POST /v1/batch, /v1/track, ...) and native POST /batch.

    Point a Segment or RudderStack SDK's host at http://HOST:PORT. A request gets 200 once it is
    durably queued; consumers load it into the warehouse with the replay's stages and spans.
    SIGTERM or Ctrl-C: stop accepting (503), drain the queue, commit, flush the spans.
    """
    from dqkit.live.queues import parse_queue
    from dqkit.live.server import serve as run

    if consumers < 0 or max_body_kb < 1 or not 0 <= port < 65536:
        _fail(ValueError("--consumers must be 0 or more, --max-body-kb at least 1, --port 0..65535"))
    try:
        parse_queue(queue, warehouse)
        run(warehouse, telemetry, queue=queue, host=host, port=port, consumers=consumers, write_key=write_key or None,
            profiles=profiles, geoip=geoip, max_body_bytes=max_body_kb * 1024)
    except DqkitError as exc:
        _fail(exc)


@main.command()
@click.option("--queue", "queue", default="embedded", show_default=True, metavar="embedded|embedded:PATH|kafka://HOST:PORT/TOPIC",
              help="The queue `dqkit serve` writes to.")
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB file to load into (created if missing).")
@click.option("--telemetry", "-t", required=True, type=click.Path(path_type=Path), help="Folder for traces.jsonl and metrics.jsonl.")
@click.option("--profiles", type=click.Path(path_type=Path), help="User profiles: CSV or Parquet.")
@click.option("--geoip", type=click.Path(path_type=Path), help="A MaxMind .mmdb file, or a directory of range tables.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True, help="Drain and exit when stdin closes (how `dqkit serve` stops its consumers).")
def consume(queue, warehouse, telemetry, profiles, geoip, stop_on_stdin_eof) -> None:
    """Load what `dqkit serve` queued into the warehouse; queue offsets are committed after each warehouse commit.

    The first consumer to open the warehouse loads it; others wait as standbys and take over
    from the committed offsets when it stops or dies. SIGTERM: drain the queue, commit, exit.
    """
    import logging
    import signal
    import threading

    from dqkit.live.consumer import consume as run
    from dqkit.live.queues import parse_queue

    logging.basicConfig(level=logging.INFO, format="dqkit consume: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if stop_on_stdin_eof:
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()
    try:
        result = run(parse_queue(queue, warehouse), warehouse, telemetry, profiles=profiles, geoip=geoip, stop=stop)
    except DqkitError as exc:
        _fail(exc)
    if result.ledger is not None:
        lg = result.ledger
        click.echo(f"consumed {result.records:,} batches in {result.chunks:,} chunks: received {lg.received:,}, "
                   f"loaded {lg.loaded:,}, invalid {lg.invalid:,}, duplicate {lg.duplicate:,}, "
                   f"dead-lettered {lg.dead_lettered:,}", err=True)


@main.command()
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dqkit-demo"), show_default=True, help="Folder for the sample, warehouse and telemetry.")
@click.option("--events", default=50_000, show_default=True, help="Approximate number of events to generate.")
@click.option("--users", default=2_000, show_default=True, help="Number of users.")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same sample).")
def demo(out, events, users, seed) -> None:
    """Generate a small sample, replay it, and say where the results are.

    Runs entirely locally: a DuckDB file and OTLP/JSON files under --out, no server needed.
    """
    from dqkit.events.generator import SampleSpec, generate
    from dqkit.pipeline.run import replay as run_replay

    try:
        sample = generate(out / "sample", SampleSpec(events=events, users=users, seed=seed))
        click.echo(f"sample: {sample.events_path} ({sample.batches:,} batches, {sample.events:,} events)")
        result = run_replay(sample.events_path, out / "warehouse.duckdb", out / "telemetry", profiles=sample.profiles_path)
    except DqkitError as exc:
        _fail(exc)
    _print_result(result, False)
    click.echo("\nNext: open the warehouse with DuckDB (SELECT * FROM events LIMIT 10; SELECT * FROM rejected_events),\n"
               "or re-run this command: the replay is idempotent and changes no count.")


@main.command()
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for events.ndjson.gz, profiles.parquet and truth.json.")
@click.option("--events", default=50_000, show_default=True, help="Approximate number of real events.")
@click.option("--users", default=2_000, show_default=True, help="Number of users.")
@click.option("--days", default=1, show_default=True, help="Days of traffic.")
@click.option("--start", default="2026-11-20T00:00:00Z", show_default=True, help="First day (ISO-8601, UTC).")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME[:key=value,...]", help="Inject a data incident (repeatable); see below.")
@click.option("--profiles-csv", is_flag=True, help="Also write profiles.csv.")
def generate(out, events, users, days, start, seed, scenarios, profiles_csv) -> None:
    """Generate a synthetic event sample (native NDJSON batches), user profiles and truth.json.

    \b
    Scenarios: --scenario NAME[:key=value,...]
      sdk_bad_timestamps  a segment's events carry malformed timestamps
      retry_storm         a segment's batches are resent magnitude times (default 5)
      event_id_collision  an SDK reuses event ids; real events are deduplicated away
      clock_skew          device clocks off by magnitude hours (default 30; beyond 24 h they are rejected)
      bot_burst           magnitude bot users (default 50) flood the product
      late_delivery       a segment's batches arrive magnitude hours late (default 8)
      real_drop           a share (rate) of a segment's real users stop coming
    Keys: start, end | duration, rate, platform, app_version, sdk_version, country, magnitude.
    Example: --scenario sdk_bad_timestamps:app_version=8.4.0,start=2026-11-20T10:00:00Z,duration=4h
    """
    from dqkit.events.generator import SampleSpec
    from dqkit.events.generator import generate as gen
    from dqkit.events.scenarios import parse_scenario
    from dqkit.spec import parse_time

    if events < 1 or users < 1 or days < 1:
        _fail(ValueError("--events, --users and --days must be positive"))
    try:
        parsed = tuple(parse_scenario(x) for x in scenarios)
        first = parse_time(start, "--start")
    except DqkitError as exc:
        _fail(exc)
    s = gen(out, SampleSpec(start=first, events=events, users=users, days=days, seed=seed, scenarios=parsed),
            profiles_csv=profiles_csv)
    click.echo(f"{s.events_path} ({s.batches:,} batches, {s.events:,} events); {s.profiles_path}; {s.truth_path}")


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--spans", "-s", "spans", required=True, multiple=True, type=click.Path(path_type=Path),
              help="OTLP/JSON span export (file or telemetry folder); repeat for several.")
@click.option("--as-of", help="The moment to reconcile at (ISO-8601, UTC); default: the end of the last span.")
@click.option("--flight-window", default="1h", show_default=True,
              help="Unloaded events of batches this recent (before --as-of) count as in flight, not lost.")
@click.option("--json", "as_json", is_flag=True, help="Print totals and findings as JSON.")
def reconcile(warehouse, spans, as_of, flight_window, as_json) -> None:
    """Compare what the spans say was loaded with what the warehouse holds.

    Every difference is classified: silent loss (spans say loaded, rows missing), never loaded,
    over-count, dead-lettered, or still in flight. Exits 0; check "unexplained" and the findings.
    """
    from datetime import UTC, datetime

    from dqkit.investigate.reconcile import reconcile as run
    from dqkit.spec import parse_duration

    try:
        window = parse_duration(flight_window, "--flight-window")
        when = None
        if as_of:
            try:
                when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
            except ValueError:
                raise click.BadParameter(f"--as-of {as_of!r} is not ISO-8601, e.g. 2026-11-20T23:59:59Z") from None
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if not Path(warehouse).is_file():
            raise DqkitError(f"warehouse {str(warehouse)!r} does not exist; pass the DuckDB file a replay wrote")
        result = run(warehouse, list(spans), as_of=when, flight_window=window)
    except (DqkitError, click.BadParameter) as exc:
        _fail(exc)
    doc = result.to_dict()
    if _echo_json(doc, as_json):
        return
    t = doc["totals"]
    click.echo(f"Reconciled at {doc['as_of']} ({len(result.batches):,} batches)")
    for k in ("received", "invalid", "duplicate", "warehouse_rows", "dead_lettered", "in_flight", "never_loaded",
              "silent_loss", "over_count", "unexplained"):
        click.echo(f"  {k.replace('_', ' '):<22}{t[k]:>12,}")
    if not doc["findings"]:
        click.echo("No differences between spans and warehouse.")
    for f in doc["findings"]:
        segs = ", ".join(f"{s['platform']} {s['app_version']} ({s['events']:,})" for s in f["segments"])
        tables = f" in {', '.join(f['tables'])}" if f["tables"] else ""
        click.echo(f"- {f['class'].replace('_', ' ')}: {f['events']:,} events in {f['batches']:,} batches{tables}, "
                   f"{f['window']['start']} .. {f['window']['end']}; most in {segs}")


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--spans", "-s", "spans", multiple=True, type=click.Path(path_type=Path),
              help="OTLP/JSON span export (file or folder), to say which stage delayed events; repeatable.")
@click.option("--day", required=True, help="The day to explain (YYYY-MM-DD, UTC).")
@click.option("--baseline-day", help="The day to compare with; default: the same weekday a week before, else the day before.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON (the documented contract).")
def diagnose(warehouse, spans, day, baseline_day, as_json) -> None:
    """Is the DAU change on --day real, or did the pipeline lose or delay users?

    Decomposes the change against the baseline into users lost at each stage, users expected to
    arrive late and a real change; ranks findings with the stage, segment and window that explain them.
    """
    from datetime import date as _date

    from dqkit.investigate.diagnose import diagnose as run

    try:
        d = _date.fromisoformat(day)
        b = _date.fromisoformat(baseline_day) if baseline_day else None
    except ValueError as exc:
        _fail(ValueError(f"--day/--baseline-day must look like 2026-11-20: {exc}"))
    try:
        result = run(warehouse, list(spans) or None, d, b)
    except DqkitError as exc:
        _fail(exc)
    doc = result.to_dict()
    if _echo_json(doc, as_json):
        return
    dau = doc["dau"]
    click.echo(f"{doc['day']} against {doc['baseline_day']} ({doc['baseline_reason']}): verdict {doc['verdict'].upper()}")
    click.echo(f"  DAU in the warehouse {dau['warehouse']:,}  received {dau['received']:,}  baseline {dau['baseline']:,}  "
               f"change {dau['change_pct']:+.1f}%  expected late {dau['expected_late']:,}")
    parts = ", ".join(f"{k} {v:+,}" for k, v in doc["decomposition"]["parts"].items() if v)
    click.echo(f"  change {doc['decomposition']['total_change']:+,} users = {parts or 'nothing'}")
    for i, f in enumerate(doc["findings"], 1):
        seg = ", ".join(f"{k}={v}" for k, v in f["segment"].items()) or "all traffic"
        click.echo(f"{i}. {f['stage']} {f['kind']} [{seg}] {f['window']['start']} .. {f['window']['end']} "
                   f"(confidence {f['confidence']:.2f}): {f['evidence']}")


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--event-id", help="Explain this event id.")
@click.option("--user-id", help="Explain this user's events (with --day).")
@click.option("--day", help="Day for --user-id (YYYY-MM-DD, UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def explain(warehouse, event_id, user_id, day, as_json) -> None:
    """List every decision that touched an event, or a user's events on a day."""
    from dqkit.investigate.explain import explain as run

    if bool(event_id) == bool(user_id) or (user_id and not day):
        _fail(ValueError("pass --event-id ID, or --user-id U with --day YYYY-MM-DD"))
    try:
        rows = run(warehouse, event_id=event_id, user_id=user_id, day=day)
    except (DqkitError, ValueError) as exc:
        _fail(exc)
    if _echo_json(rows, as_json):
        return
    if not rows:
        click.echo("Nothing in the warehouse matches (neither loaded nor rejected).")
    for r in rows:
        click.echo(f"event {r['event_id']} ({r['event_type']}, {r['event_ts'] or 'no valid time'}): {r['outcome']}")
        for step in r["decisions"]:
            click.echo(f"  - {step}")


@main.command()
@click.option("--day", help="Day to report on (YYYY-MM-DD, UTC); default: yesterday.")
@click.option("--warehouse", "-w", type=click.Path(path_type=Path), help="DuckDB warehouse (default: a demo replay).")
@click.option("--spans", "-s", type=click.Path(path_type=Path), help="Span export: traces.jsonl or the telemetry folder.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dqkit-report"), show_default=True,
              help="Folder for the executed notebook, the HTML report and findings.json.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Notebook parameter, e.g. max_lag_p95_s=1800 or max_rejected_share=0.02 (repeatable).")
def report(day, warehouse, spans, out, params) -> None:
    """Run the daily quality report (papermill) and exit non-zero when a threshold breaks.

    \b
    Writes OUT/quality_report-DAY.ipynb (executed), OUT/quality_report-DAY.html (standalone,
    charts embedded) and OUT/findings.json.
    Exit codes: 0 healthy; 3 a threshold was breached (unexplained loss, lag p95, rejected
    share); 1 the notebook failed (the executed notebook keeps the error); 2 bad arguments.
    Cron: 15 6 * * *  cd /srv/dqkit && .venv/bin/dqkit report -w wh.duckdb -s telemetry --out reports/$(date +\\%F)
    """
    from dqkit.report import EXIT_USAGE, run_report, yesterday

    kv = {}
    for p in params:
        key, eq, value = p.partition("=")
        if not eq:
            click.echo(f"dqkit: error: --param {p!r} must look like key=value", err=True)
            sys.exit(EXIT_USAGE)
        kv[key] = value
    if bool(warehouse) != bool(spans):
        click.echo("dqkit: error: pass both --warehouse and --spans, or neither for the demo", err=True)
        sys.exit(EXIT_USAGE)
    try:
        code, doc = run_report(day or yesterday(), warehouse or "", spans or "", out, kv)
    except DqkitError as exc:
        click.echo(f"dqkit: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if code == 1:
        click.echo(f"dqkit: the report notebook failed; see the executed notebook in {out}", err=True)
    else:
        state = "healthy" if code == 0 else "THRESHOLD BREACHED: " + "; ".join(doc["breaches"])
        click.echo(f"{doc['day']}: {state}. Report: {out}")
    sys.exit(code)


if __name__ == "__main__":
    main()
