"""The ``dqkit`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dqkit.errors import DqkitError

EXIT_NOTHING_MATCHED = 4
"""replay/generate: the run finished, but the sample held no events, or a --fault or --scenario
matched none."""


def _fail(exc: Exception) -> None:
    click.echo(f"dqkit: error: {exc}", err=True)
    sys.exit(2)


def _warn_unmatched(option: str, items: list[dict]) -> None:
    """A spec that touched no event is almost always a typo in its segment or window: say so on
    stderr and exit :data:`EXIT_NOTHING_MATCHED` (the run itself is complete and kept)."""
    unmatched = [it for it in items if not it["events"]]
    for it in unmatched:
        click.echo(f"dqkit: warning: {option} {it['spec']!r} matched no events; check its window and "
                   f"{'platform' if option == '--fault' else 'segment'} against the sample", err=True)
    if unmatched:
        sys.exit(EXIT_NOTHING_MATCHED)


def _span_paths(ctx, param, value):
    """Check span exports when the command starts: one a command reads only for some findings
    would otherwise be ignored when it is missing."""
    from dqkit.investigate.spans import _files

    paths = value if isinstance(value, tuple) else (value,) if value else ()
    try:
        _files(list(paths))
    except DqkitError as exc:
        _fail(exc)
    return value


def _openable_warehouse(ctx, param, value):
    """Open ``--warehouse`` once up front: an unusable file is a usage error (exit 2), found
    before a notebook kernel starts rather than as a failed notebook."""
    if value is not None:
        from dqkit.db import connect_read_only

        try:
            connect_read_only(value).close()
        except DqkitError as exc:
            _fail(exc)
    return value


def _day(ctx, param, value):
    """A ``YYYY-MM-DD`` option as a date (None when not given); anything else is a one-line error
    that shows the format."""
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        _fail(ValueError(f"--{param.name.replace('_', '-')} {value!r} is not a day; use YYYY-MM-DD (UTC), e.g. 2026-11-20"))


def _echo_json(doc, as_json: bool) -> bool:
    """Print ``doc`` as JSON when ``--json`` was given (the commands' machine-readable form)."""
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    return as_json


def _source_option(f):
    """``--source`` on every investigation command: what the warehouse's tables mean."""
    return click.option(
        "--source", "source", metavar="dqkit|reference|FILE.toml",
        help="What the warehouse's tables mean: dqkit (written by dqkit), reference (the reference article's "
             "events_<type> tables) or a mapping file; default: detected from the tables.")(f)


def _as_of(ctx, param, value):
    """An ISO-8601 moment (UTC when no offset is given), or None."""
    if not value:
        return None
    from dqkit.timefmt import parse_iso

    try:
        return parse_iso(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO-8601, e.g. 2026-11-28T07:00:00Z") from None


def _print_unknown(doc: dict) -> None:
    for sentence in doc.get("unknown") or []:
        click.echo(f"  unknown: {sentence}")


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
    from dqkit.allocator import keep_freed_memory

    # Before any command imports Polars: its allocator reads the setting once, at import.
    keep_freed_memory()


@main.command()
@click.argument("sample", type=click.Path(path_type=Path))
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB file to load into (created if missing).")
@click.option("--telemetry", "-t", required=True, type=click.Path(path_type=Path), help="Folder for traces.jsonl and metrics.jsonl (OTLP/JSON lines).")
@click.option("--profiles", type=click.Path(path_type=Path), help="User profiles: CSV or Parquet with user_id, country, segment, signup_date.")
@click.option("--geoip", type=click.Path(path_type=Path), help="A MaxMind .mmdb file, or a directory of range tables (default: bundled IPFire data).")
@click.option("--chunk-lines", default=10_000, show_default=True,  # = readers.DEFAULT_CHUNK_LINES (not imported: --help stays fast)
               help="Client batches processed together (bounds memory; a chunk also ends after 32 MB of input). Up to three chunks are in memory at once: one being read, one in the stages, one having its spans written.")
@click.option("--load-interval", default=60.0, show_default=True, help="Warehouse load cadence in seconds, on the replay clock.")
@click.option("--max-event-age", default="30d", show_default=True, metavar="DURATION",
              help="Events stamped longer than this before their batch arrived are quarantined as ancient_timestamp; "
                   "raise it (e.g. 400d) to replay a backfill.")
@click.option("--fault", "faults", multiple=True, metavar="NAME[:key=value,...]",
              help="Inject a pipeline fault (repeatable); grammar below.")
@click.option("--truth", type=click.Path(path_type=Path),
              help="Where to write what the faults did (JSON); default: next to the warehouse, *.faults.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def replay(sample, warehouse, telemetry, profiles, geoip, chunk_lines, load_interval, max_event_age, faults, truth,
           as_json) -> None:
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
    Exit code 4: the sample held no events, or a fault matched none (named on stderr).
    Example: --fault insert_failure:table=events_like,start=2026-10-08T08:00:00Z,end=2026-10-08T20:00:00Z

    \b
    Example:
      dqkit replay events.ndjson.gz -w wh.duckdb -t telemetry --profiles profiles.csv --fault geoip_outage:rate=0.5
    """
    from tqdm import tqdm

    from dqkit.events.readers import sample_size
    from dqkit.events.schema import ValidationLimits
    from dqkit.pipeline.faults import parse_fault
    from dqkit.pipeline.run import ReplayConfig
    from dqkit.pipeline.run import replay as run_replay
    from dqkit.spec import parse_duration

    if chunk_lines < 1:
        _fail(ValueError("--chunk-lines must be at least 1"))
    if load_interval <= 0:
        _fail(ValueError("--load-interval must be a positive number of seconds"))
    try:
        parsed = tuple(parse_fault(f) for f in faults)
        limits = ValidationLimits(max_age_s=parse_duration(max_event_age, "--max-event-age").total_seconds())
        truth_path = truth or (Path(warehouse).with_suffix(".faults.json") if parsed else None)
        total = sample_size(sample) if Path(sample).is_file() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc="replay", disable=as_json or None, file=sys.stderr) as bar:
            def progress(pos, ledger):
                bar.update(pos - bar.n)
                bar.set_postfix(events=f"{ledger.received:,}", refresh=False)

            result = run_replay(sample, warehouse, telemetry, profiles=profiles, geoip=geoip,
                                config=ReplayConfig(chunk_lines=chunk_lines, load_interval_s=load_interval,
                                                    faults=parsed, truth_path=truth_path, limits=limits),
                                progress=progress)
    except DqkitError as exc:
        _fail(exc)
    _print_result(result, as_json)
    if not result.deliveries and not result.skipped_deliveries:
        click.echo(f"dqkit: warning: sample {str(sample)!r} holds no events (it is empty or only blank lines); "
                   "nothing was replayed", err=True)
        sys.exit(EXIT_NOTHING_MATCHED)
    if result.deliveries:  # a re-run that skipped everything gave the faults nothing to match
        _warn_unmatched("--fault", result.faults)


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
            "spans_not_exported": result.telemetry.spans_not_exported, "faults": result.faults,
            "geo_lookup_errors": result.geo_lookup_errors,
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
    if result.geo_lookup_errors:
        click.echo(f"warning: {result.geo_lookup_errors:,} events loaded without geo: their records in the --geoip "
                   "database could not be read (the file is damaged)", err=True)


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

    \b
    Example:
      dqkit serve -w wh.duckdb -t telemetry --port 8088 --queue kafka://127.0.0.1:9092/events
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

    \b
    Example:
      dqkit consume --queue kafka://broker:9092/events -w wh.duckdb -t telemetry
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
        def stop_at_eof() -> None:  # the parent `dqkit serve` closed our stdin: it is gone
            sys.stdin.buffer.read()
            stop.set()

        threading.Thread(target=stop_at_eof, daemon=True).start()
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

    \b
    Example:
      dqkit demo --out dqkit-demo --events 20000
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
@click.option("--events", type=int, help="Approximate number of real events (default: 8 per user and day).")
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
      id_reuse            an SDK (sdk_version=, required) gives events the ids of earlier,
                          different events of other batches; dedup removes real events
      clock_skew          device clocks off by magnitude hours (default 30; beyond 24 h they are rejected)
      bot_burst           magnitude bots (default 50) without profiles, from one or two /24s on one
                          client (default web, US), in short sessions over a few hours (default 3 h)
      late_delivery       a segment's batches arrive magnitude hours late (default 8)
      real_drop           a share (rate) of a segment's real users stop coming
      real_growth         new users sign up in the window: magnitude extra users as a share of those
                          active there (default 0.2), with profiles, on the newest app version
    Keys: start, end | duration, rate, platform, app_version, sdk_version, country, magnitude.
    A scenario that matched no events is named on stderr and the exit code is 4.
    Example: --scenario sdk_bad_timestamps:app_version=8.4.0,start=2026-11-20T10:00:00Z,duration=4h

    \b
    Example:
      dqkit generate --out sample --events 200000 --days 7 --scenario real_drop:platform=ios,rate=0.2
    """
    from dqkit.events.generator import SampleSpec
    from dqkit.events.generator import generate as gen
    from dqkit.events.scenarios import parse_scenario
    from dqkit.spec import parse_time

    if (events is not None and events < 1) or users < 1 or days < 1:
        _fail(ValueError("--events, --users and --days must be positive"))
    try:
        parsed = tuple(parse_scenario(x) for x in scenarios)
        first = parse_time(start, "--start")
        s = gen(out, SampleSpec(start=first, events=events, users=users, days=days, seed=seed, scenarios=parsed),
                profiles_csv=profiles_csv)
    except DqkitError as exc:
        _fail(exc)  # a scenario the sample cannot hold (given twice, a country without networks)
    click.echo(f"{s.events_path} ({s.batches:,} batches, {s.events:,} events); {s.profiles_path}; {s.truth_path}")
    _warn_unmatched("--scenario", json.loads(s.truth_path.read_text())["scenarios"])


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--spans", "-s", "--telemetry", "-t", "spans", required=True, multiple=True, type=click.Path(path_type=Path),
              callback=_span_paths, help="OTLP/JSON span export (file or telemetry folder); repeat for several.")
@click.option("--as-of", "as_of", callback=_as_of,
              help="The moment to reconcile at (ISO-8601, UTC); default: the end of the last span.")
@click.option("--flight-window", default="1h", show_default=True,
              help="Unloaded events of batches this recent (before --as-of) count as in flight, not lost.")
@click.option("--json", "as_json", is_flag=True, help="Print totals and findings as JSON.")
@_source_option
def reconcile(warehouse, spans, as_of, flight_window, as_json, source) -> None:
    """Compare what the spans say was loaded with what the warehouse holds.

    Every difference is classified: silent loss (spans say loaded, rows missing), never loaded,
    over-count, dead-lettered, or still in flight. Exits 0; check "unexplained" and the findings.

    \b
    Example:
      dqkit reconcile -w wh.duckdb -s telemetry --json
    """
    from dqkit.investigate.reconcile import reconcile as run
    from dqkit.spec import parse_duration

    try:
        window = parse_duration(flight_window, "--flight-window")
        result = run(warehouse, list(spans), as_of=as_of, flight_window=window, source=source)
    except DqkitError as exc:
        _fail(exc)
    doc = result.to_dict()
    if _echo_json(doc, as_json):
        return
    t = doc["totals"]
    how = "per batch" if doc["per_batch"] else "per table and hour"
    click.echo(f"Reconciled at {doc['as_of']} ({len(result.batches):,} batches; source {doc['source']}, {how})")
    for k in ("received", "invalid", "duplicate", "warehouse_rows", "dead_lettered", "in_flight", "never_loaded",
              "silent_loss", "over_count", "unexplained", "overstated_load"):
        click.echo(f"  {k.replace('_', ' '):<22}{t[k]:>12,}")
    _print_unknown(doc)
    if not doc["findings"]:
        click.echo("No differences between spans and warehouse.")
    for f in doc["findings"]:
        segs = ", ".join(f"{s['platform']} {s['app_version']} ({s['events']:,})" for s in f["segments"])
        tables = f" in {', '.join(f['tables'])}" if f["tables"] else ""
        where = f" in {f['batches']:,} batches" if f.get("batches") is not None else ""
        click.echo(f"- {f['class'].replace('_', ' ')}: {f['events']:,} events{where}{tables}, "
                   f"{f['window']['start']} .. {f['window']['end']}" + (f"; most in {segs}" if segs else "")
                   + (f" ({f['note']})" if f.get("note") else ""))


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--spans", "-s", "--telemetry", "-t", "spans", multiple=True, type=click.Path(path_type=Path),
              callback=_span_paths, help="OTLP/JSON span export (file or folder), to say which stage delayed events; repeatable.")
@click.option("--day", required=True, callback=_day, help="The day to explain (YYYY-MM-DD, UTC).")
@click.option("--baseline-day", callback=_day, help="The day to compare with; default: the same weekday a week before, else the day before.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON (the documented contract).")
@click.option("--as-of", "as_of", callback=_as_of,
              help="The moment to answer for (ISO-8601, UTC): rows loaded later are not seen, and a day whose users may "
                   "still arrive is provisional; default: the latest load in the data.")
@_source_option
def diagnose(warehouse, spans, day, baseline_day, as_json, source, as_of) -> None:
    """Is the DAU change on --day real, or did the pipeline lose or delay users?

    Decomposes the change against the baseline into users lost at each stage, users expected to
    arrive late and a real change; ranks findings with the stage, segment and window that explain them.

    \b
    Example:
      dqkit diagnose -w wh.duckdb -s telemetry --day 2026-11-20 --baseline-day 2026-11-13
    """
    from dqkit.investigate.diagnose import diagnose as run

    try:
        result = run(warehouse, list(spans) or None, day, baseline_day, source=source, as_of=as_of)
    except DqkitError as exc:
        _fail(exc)
    doc = result.to_dict()
    if doc["verdict"] == "no_data" and not doc["dau"]["received"]:
        _echo_json(doc, as_json)
        click.echo(f"dqkit: warning: {doc['reason']}", err=True)
        sys.exit(EXIT_NOTHING_MATCHED)
    if _echo_json(doc, as_json):
        return
    dau = doc["dau"]
    click.echo(f"{doc['day']} against {doc['baseline_day']} ({doc['baseline_reason']}): verdict {doc['verdict'].upper()}"
               + (" (provisional)" if doc["status"] == "provisional" else ""))
    click.echo(f"  {doc['reason']}")
    band = dau.get("band") or {}
    click.echo(f"  DAU in the warehouse {dau['warehouse']:,}  received {dau['received']:,}  baseline {dau['baseline']:,}  "
               f"change {dau['change_pct']:+.1f}%  expected late {dau['expected_late']:,}"
               + (f" (final DAU {band['low']:,}..{band['high']:,})" if doc["status"] == "provisional" and band else ""))
    parts = ", ".join(f"{k} {v:+,}" for k, v in doc["decomposition"]["parts"].items() if v)
    click.echo(f"  change {doc['decomposition']['total_change']:+,} users = {parts or 'nothing'}")
    _print_unknown(doc)
    for i, f in enumerate(doc["findings"], 1):
        seg = ", ".join(f"{k}={v}" for k, v in f["segment"].items()) or "all traffic"
        click.echo(f"{i}. {f['stage']} {f['kind']} [{seg}] {f['window']['start']} .. {f['window']['end']} "
                   f"(confidence {f['confidence']:.2f}): {f['evidence']}")


@main.command()
@click.option("--warehouse", "-w", required=True, type=click.Path(path_type=Path), help="DuckDB warehouse file.")
@click.option("--event-id", help="Explain this event id.")
@click.option("--user-id", help="Explain this user's events (with --day).")
@click.option("--day", callback=_day, help="Day for --user-id (YYYY-MM-DD, UTC).")
@click.option("--spans", "-s", "--telemetry", "-t", "spans", multiple=True, type=click.Path(path_type=Path),
              callback=_span_paths,
              help="OTLP/JSON span export (file or folder): events the warehouse never saw are explained from it; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_source_option
def explain(warehouse, event_id, user_id, day, spans, as_json, source) -> None:
    """List every decision that touched an event, or a user's events on a day.

    \b
    Example:
      dqkit explain -w wh.duckdb --user-id u_42 --day 2026-11-20 -s telemetry
    """
    from dqkit.investigate.explain import explain as run

    if bool(event_id) == bool(user_id) or (user_id and not day):
        _fail(ValueError("pass --event-id ID, or --user-id U with --day YYYY-MM-DD"))
    try:
        rows = run(warehouse, event_id=event_id, user_id=user_id, day=day, spans=list(spans) or None, source=source)
    except (DqkitError, ValueError) as exc:
        _fail(exc)
    if not rows:
        _echo_json(rows, as_json)
        what = f"event id {event_id!r}" if event_id else f"user {user_id!r} on {day}"
        click.echo(f"dqkit: warning: nothing matches {what}: no loaded or quarantined event"
                   + (", and no span carries it" if spans else "; pass --spans to search the telemetry too"), err=True)
        sys.exit(EXIT_NOTHING_MATCHED)
    if _echo_json(rows, as_json):
        return
    for r in rows:
        click.echo(f"event {r['event_id']} ({r['event_type']}, {r['event_ts'] or 'no valid time'}): {r['outcome']}")
        for step in r["decisions"]:
            click.echo(f"  - {step}")


@main.command()
@click.option("--day", callback=_day, help="Day to report on (YYYY-MM-DD, UTC); default: yesterday.")
@click.option("--warehouse", "-w", type=click.Path(path_type=Path), callback=_openable_warehouse,
              help="DuckDB warehouse (default: a demo replay).")
@click.option("--spans", "-s", "--telemetry", "-t", "spans", type=click.Path(path_type=Path),
              help="Span export: traces.jsonl or the telemetry folder.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dqkit-report"), show_default=True,
              help="Folder for the executed notebook, the HTML report and findings.json.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A threshold, e.g. max_lag_p95_s=1800, max_rejected_share=0.02, max_dead_lettered=100 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings document (findings.json) on stdout.")
@click.option("--progress/--no-progress", default=None,
              help="Show the notebook's progress (cells executed) on stderr; default: when stderr is a terminal.")
@click.option("--as-of", "as_of", callback=_as_of,
              help="The moment the report describes (ISO-8601, UTC); default: the latest load in the data.")
@_source_option
def report(day, warehouse, spans, out, params, as_json, progress, source, as_of) -> None:
    """Run the daily quality report (papermill) and exit non-zero when a threshold breaks.

    \b
    Writes OUT/quality_report-DAY.ipynb (executed), OUT/quality_report-DAY.html (standalone,
    charts embedded) and OUT/findings.json.
    Thresholds (defaults in dqkit.report.Thresholds): max_unexplained_loss=0, max_dead_lettered=0,
    max_rejected_share=0.05, max_lag_p95_s=3600.
    Exit codes: 0 healthy; 3 a threshold was breached; 1 the notebook failed (the executed
    notebook keeps the error); 2 bad arguments.
    Cron: 15 6 * * *  cd /srv/dqkit && .venv/bin/dqkit report -w wh.duckdb -s telemetry --out reports/$(date +\\%F)

    \b
    Example:
      dqkit report --day 2026-11-20 -w wh.duckdb -s telemetry --param max_lag_p95_s=1800
    """
    from dqkit.report import EXIT_USAGE, run_report, yesterday
    from dqkit.report.render import breach_text

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
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        code, doc = run_report(day.isoformat() if day else yesterday(), warehouse or "", spans or "", out, kv,
                               progress=progress, source=source, as_of=as_of.isoformat() if as_of else None)
    except DqkitError as exc:
        click.echo(f"dqkit: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if code == 1:
        click.echo(f"dqkit: the report notebook failed; see the executed notebook in {out}", err=True)
        sys.exit(code)
    state = "healthy" if code == 0 else "THRESHOLD BREACHED: " + "; ".join(breach_text(c) for c in doc["breaches"])
    line = f"{doc['day']}: {state}. Report: {out / ('quality_report-' + doc['day'] + '.html')}"
    if _echo_json(doc, as_json):
        click.echo(line, err=True)
    else:
        click.echo(line)
    sys.exit(code)


if __name__ == "__main__":
    main()
