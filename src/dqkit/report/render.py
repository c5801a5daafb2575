"""The report's text, for the person who reads it at 07:00: a status banner, DAU and where its
change comes from, findings as sentences, the checks, the lag in minutes — formatted numbers and
human labels throughout. Each function takes the ``findings.json`` document (or a
:class:`~dqkit.report.daily.DailyReport`) and returns an object that notebooks display as HTML
and print as plain text (which nbval compares)."""

from __future__ import annotations

from datetime import date
from html import escape

from dqkit.investigate.charts import PART_LABELS
from dqkit.timefmt import parse_iso

_OK, _BAD = ("#1a7f37", "#dafbe1"), ("#cf222e", "#ffebe9")
_TD = "padding:6px 12px;border-bottom:1px solid #d0d7de;vertical-align:top;text-align:left;"
_TH = "padding:6px 12px;border-bottom:2px solid #8c959f;text-align:left;font-weight:600;white-space:nowrap;"
_NUM = "text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums;"
_FONT = "font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;color:#1f2328;line-height:1.45;"


class Html:
    """HTML for notebooks and the report page, with a plain-text twin for ``print`` and nbval."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


# -- numbers and words ---------------------------------------------------------------------------

def count(n: int | float | None) -> str:
    """``1234`` → ``1,234``."""
    return "—" if n is None else f"{n:,.0f}"


def signed(n: int) -> str:
    """``-113`` → ``−113`` (a true minus), ``10`` → ``+10``, ``0`` → ``0``."""
    return "0" if n == 0 else f"{n:+,}".replace("-", "−")


def pct(share: float | None, digits: int = 1) -> str:
    """A share as a percentage: ``0.0961`` → ``9.6%``; small non-zero shares keep a digit."""
    if share is None:
        return "—"
    p = share * 100
    if 0 < abs(p) < 10 ** -digits:
        return f"{p:.{digits + 1}f}%"
    return f"{p:,.{digits}f}%"


def duration(seconds: float | None) -> str:
    """``440`` → ``7 min 20 s``; ``3900`` → ``1 h 05 min``; ``42`` → ``42 s``."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min" + (f" {r:02d} s" if r else "")
    h, r = divmod(round(s / 60), 60)
    if h >= 48:
        return f"{h / 24:.1f} days"
    return f"{h} h" + (f" {r:02d} min" if r else "")


def long_day(day: str) -> str:
    """``2026-11-27`` → ``Friday 27 November 2026``."""
    return date.fromisoformat(day).strftime("%A %-d %B %Y")


def short_day(day: str) -> str:
    """``2026-11-20`` → ``Fri 20 Nov``."""
    return date.fromisoformat(day).strftime("%a %-d %b")


def window(w: dict | None) -> str:
    """A finding's window: ``08:00–14:00 UTC`` on one day, dates added when it spans days."""
    if not w or not w.get("start"):
        return "—"
    a = parse_iso(w["start"])
    if not w.get("end"):
        return f"from {a:%-d %b %H:%M} UTC"
    b = parse_iso(w["end"])
    if (b - a).total_seconds() >= 86400 and a.hour == b.hour == 0:
        return "the whole day" if (b - a).days == 1 else f"{a:%-d %b} – {b:%-d %b}"
    if a.date() == b.date() or (b.hour == 0 and b.minute == 0 and (b - a).days == 0):
        return f"{a:%H:%M}–{'24:00' if b.date() != a.date() else format(b, '%H:%M')} UTC"
    return f"{a:%-d %b %H:%M} – {b:%-d %b %H:%M} UTC"


_DIMS = {"platform": "{}", "app_version": "app {}", "sdk_version": "SDK {}", "event_type": "{} events", "country": "country {}"}


def segment(seg: dict | None) -> str:
    """``{"platform": "android", "app_version": "8.4.0"}`` → ``android · app 8.4.0``."""
    if not seg:
        return "all traffic"
    return " · ".join(_DIMS.get(k, k + " {}").format(v) for k, v in seg.items())


def _doc(report) -> dict:
    return report if isinstance(report, dict) else report.to_dict()


def check_value(unit: str, value) -> str:
    """A check's value in its unit, for people."""
    if unit == "share":
        return pct(value, 2 if value is not None and 0 < value < 0.01 else 1)
    if unit == "seconds":
        return duration(value)
    if unit == "hours":
        return f"{count(value)} hours"
    return f"{count(value)} events"


def breach_text(c: dict) -> str:
    """``Received events rejected as invalid: 9.61% (limit 5.00%)``."""
    return f"{c['label']}: {check_value(c['unit'], c['value'])} (limit {check_value(c['unit'], c['limit'])})"


# -- sentences -------------------------------------------------------------------------------------

_STAGE = {"validate": "validation", "dedup": "deduplication", "warehouse.insert": "the warehouse insert",
          "enrich.geo_ip": "geo-IP enrichment", "enrich.user_profile": "profile enrichment", "queue": "the queue",
          "client": "the clients", "none": "no pipeline stage"}


def finding_sentence(f: dict) -> str:
    """One diagnosis finding as a sentence."""
    ev, us, stage = f["events"], f["users"], f["stage"]
    lost_users = f" — {us:,} users had nothing else loaded" if us else ""
    if f["kind"] == "drop" and stage == "validate":
        return f"{ev:,} events rejected as invalid at validation{lost_users}."
    if f["kind"] == "drop" and stage == "warehouse.insert":
        return f"{ev:,} events dead-lettered after inserts failed{lost_users}."
    if f["kind"] == "drop" and stage == "dedup":
        return f"{ev:,} distinct events removed as duplicates (their ids clashed){lost_users}."
    if f["kind"] == "inflated" and stage == "dedup":
        return f"{ev:,} resent events removed as duplicates; nothing was lost."
    if f["kind"] == "degraded":
        what = "a geo-IP country" if stage == "enrich.geo_ip" else "a user profile"
        return f"{us:,} users' events ({ev:,}) loaded without {what}; they still count in DAU."
    if f["kind"] == "delay":
        return f"{ev:,} events of {us:,} users reached the warehouse over an hour late; most of the wait was in {_STAGE.get(stage, stage)}."
    if f["kind"] == "real_change":
        return f"{us:,} fewer real users than on the baseline day — not the pipeline."
    if f["kind"] == "inflated":
        return f"{us:,} more users than on the baseline day, not explained by the pipeline."
    return f["evidence"]


_DIFF = {
    "silent_loss": "events the insert spans counted as loaded are missing from the warehouse",
    "never_loaded": "published events never reached an insert",
    "over_count": "more rows in the warehouse than the insert spans loaded",
    "dead_lettered": "events dead-lettered after failed inserts (spans)",
    "in_flight": "events still on their way to the warehouse",
    "overstated_load": "rows of failed inserts that the load's own total still counts as loaded",
}


def difference_sentence(f: dict) -> str:
    """One spans-vs-warehouse difference (:meth:`Reconciliation.findings`) as a sentence."""
    tables = f" ({', '.join(f['tables'])})" if f.get("tables") else ""
    where = f"in {f['batches']:,} batches" if f.get("batches") is not None else f"per table and hour, {window(f.get('window'))}"
    return f"{f['events']:,} {_DIFF.get(f['class'], f['class'])}{tables}, {where}."


# -- blocks ----------------------------------------------------------------------------------------

def _verdict_line(doc: dict) -> str:
    dau, v = doc["dau"], doc["verdict"]
    change = f"DAU {count(dau['warehouse'])}, {signed_pct(dau['change_pct'])} against {short_day(doc['baseline_day'])}"
    lost = -sum(u for k, u in doc["decomposition"]["parts"].items() if k != "real_change")
    why = {"pipeline": f"the pipeline's doing: {count(lost)} users lost in it or still to arrive",
           "real": "a real change in users, not the pipeline",
           "mixed": f"partly real, partly the pipeline ({count(lost)} users lost in it or still to arrive)",
           "inflated": "inflated by a bot-like burst, not by real users",
           "no_data": ("no events at all for the day: the data is missing, not the users" if not dau["received"]
                       else "events are missing for part of the day, so DAU says nothing about users yet"),
           "none": "no material change"}.get(v, v)
    if doc.get("dau_status", doc.get("status")) == "provisional":
        why += " (provisional: users of the day may still arrive)"
    return f"{change} — {why}."


def signed_pct(p: float) -> str:
    """``-9.41`` (percent) → ``−9.4%``; zero → ``0%``."""
    return "0%" if round(p, 1) == 0 else f"{p:+.1f}%".replace("-", "−")


def banner(report) -> Html:
    """The status, large: HEALTHY or BREACHED with what breached, and the DAU verdict."""
    doc = _doc(report)
    fg, bg = _OK if doc["healthy"] else _BAD
    state = "HEALTHY" if doc["healthy"] else "BREACHED"
    n = len(doc["breaches"])
    sub = (f"all {len(doc['checks'])} checks passed" if not n else f"{n} of {len(doc['checks'])} checks breached")
    items = "".join(f"<li>{escape(breach_text(c))}</li>" for c in doc["breaches"])
    m = doc["measures"]
    facts = (f"{count(m['received'])} events received · {count(m['loaded'])} in the warehouse · "
             f"p95 lag {duration(m['lag_p95_s'])}")
    html = (f'<div style="{_FONT}border-left:10px solid {fg};background:{bg};padding:16px 22px;margin:8px 0 18px;border-radius:6px">'
            f'<div style="font-size:15px;color:#57606a">Data quality · {escape(long_day(doc["day"]))}</div>'
            f'<div style="font-size:44px;font-weight:800;letter-spacing:1px;color:{fg};line-height:1.15">{state}</div>'
            f'<div style="font-size:17px;font-weight:600;margin:2px 0 6px">{escape(sub)}</div>'
            + (f'<ul style="font-size:16px;margin:4px 0 8px 0;padding-left:22px">{items}</ul>' if items else "")
            + f'<div style="font-size:16px;margin-top:6px">{escape(_verdict_line(doc))}</div>'
            f'<div style="font-size:14px;color:#57606a;margin-top:4px">{escape(facts)}</div></div>')
    lines = [f"{state} — {long_day(doc['day'])}: {sub}"] + [f"  breached: {breach_text(c)}" for c in doc["breaches"]]
    lines += [_verdict_line(doc), facts]
    return Html(html, "\n".join(lines))


def _tiles(tiles: list[tuple[str, str, str]]) -> str:
    cells = "".join(
        f'<div style="display:inline-block;min-width:150px;margin:0 14px 10px 0;padding:10px 14px;border:1px solid #d0d7de;'
        f'border-radius:6px;vertical-align:top"><div style="font-size:13px;color:#57606a">{escape(label)}</div>'
        f'<div style="font-size:28px;font-weight:700;color:{color};font-variant-numeric:tabular-nums">{escape(value)}</div></div>'
        for label, value, color in tiles)
    return f'<div style="{_FONT}">{cells}</div>'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), nowrap: set[int] = frozenset()) -> str:
    th = "".join(f'<th style="{_TH}{"text-align:right;" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(
        f'<td style="{_TD}{_NUM if i in numeric else ""}{"white-space:nowrap;" if i in nowrap else ""}">{c}</td>'
        for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<table style="{_FONT}border-collapse:collapse;font-size:15px;margin:6px 0 14px;min-width:60%">'
            f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


def dau_panel(report) -> Html:
    """DAU on the day against the baseline, and the parts the change splits into."""
    doc = _doc(report)
    dau, parts = doc["dau"], doc["decomposition"]["parts"]
    change = dau["warehouse"] - dau["baseline"]
    color = _BAD[0] if change < 0 else _OK[0] if change > 0 else "#1f2328"
    tiles = [(f"DAU on {short_day(doc['day'])}", count(dau["warehouse"]), "#1f2328"),
             (f"baseline, {short_day(doc['baseline_day'])}", count(dau["baseline"]), "#57606a"),
             ("change", f"{signed(change)} ({signed_pct(dau['change_pct'])})", color),
             ("users the pipeline received", count(dau["received"]), "#57606a"),
             ("expected to arrive late", count(dau["expected_late"]), "#57606a")]
    base = max(dau["baseline"], 1)
    rows = [[escape(PART_LABELS.get(k, k)), escape(signed(v)), escape(signed_pct(v / base * 100))] for k, v in parts.items()]
    rows.append(["<b>total change</b>", f"<b>{escape(signed(change))}</b>", f"<b>{escape(signed_pct(dau['change_pct']))}</b>"])
    note = (f'<div style="{_FONT}font-size:14px;color:#57606a">Baseline: {escape(doc["baseline_reason"])}. '
            "Users lost at a stage had everything they sent that day rejected there; the real change is what the "
            "pipeline received, plus users expected late, minus the baseline's.</div>")
    html = _tiles(tiles) + _table(["part of the change", "users", "of baseline DAU"], rows, {1, 2}) + note
    text = [f"DAU {dau['warehouse']:,} on {doc['day']} against {dau['baseline']:,} on {doc['baseline_day']} "
            f"({signed(change)}, {signed_pct(dau['change_pct'])}); received {dau['received']:,}, expected late {dau['expected_late']:,}"]
    text += [f"  {PART_LABELS.get(k, k):<26}{signed(v):>8}" for k, v in parts.items()]
    return Html(html, "\n".join(text))


def findings_table(report) -> Html:
    """What went wrong, most important first: sentence, window, segment, DAU impact, confidence."""
    doc = _doc(report)
    rows, text = [], []
    for i, f in enumerate(doc["findings"], 1):
        impact = signed_pct(f["dau_impact_pct"]) if f["dau_impact_pct"] else "none"
        rows.append([str(i), escape(finding_sentence(f)), escape(window(f["window"])), escape(segment(f["segment"])),
                     escape(impact), escape(pct(f["confidence"], 0))])
        text.append(f"{i}. {finding_sentence(f)} {window(f['window'])}; {segment(f['segment'])}; DAU impact {impact}")
    for f in doc.get("differences", []):
        if f["class"] in ("dead_lettered", "in_flight"):
            continue  # told above (the diagnosis) or not a loss
        w = window({"start": f["window"]["start"], "end": f["window"]["end"]})
        seg = segment({"platform": f["segments"][0]["platform"]}) if f["segments"] else "—"
        rows.append([str(len(rows) + 1), escape(difference_sentence(f)), escape(w), escape(seg), "—", "—"])
        text.append(f"{len(rows)}. {difference_sentence(f)} {w}; {seg}")
    if not rows:
        return Html(f'<p style="{_FONT}font-size:16px">Nothing stands out against the baseline day.</p>',
                    "No findings: nothing stands out against the baseline day.")
    return Html(_table(["#", "what happened", "when", "where", "DAU impact", "confidence"], rows, {0, 4, 5}, {2, 3}),
                "\n".join(text))


def checks_table(report) -> Html:
    """Every threshold with the day's value and whether it held."""
    doc = _doc(report)
    rows, text = [], []
    for c in doc["checks"]:
        mark = (f'<span style="color:{_BAD[0]};font-weight:700">✗ breached</span>' if c["breached"]
                else f'<span style="color:{_OK[0]};font-weight:700">✓ ok</span>')
        rows.append([escape(c["label"]), escape(check_value(c["unit"], c["value"])), escape(check_value(c["unit"], c["limit"])),
                     mark, f'<code>{escape(c["name"])}</code>'])
        text.append(f"{'BREACHED' if c['breached'] else 'ok':<9}{c['label']}: {check_value(c['unit'], c['value'])} "
                    f"(limit {check_value(c['unit'], c['limit'])})")
    return Html(_table(["check", "value", "limit", "", "parameter"], rows, {1, 2}), "\n".join(text))


def lag_summary(report) -> Html:
    """The day's lag in words: half, 95% and 99% of events within how long."""
    m = _doc(report)["measures"]
    if m["lag_p50_s"] is None:
        return Html(f'<p style="{_FONT}">No events of this day are in the warehouse.</p>', "No events of this day loaded.")
    t = (f"Half the day's events reached the warehouse within {duration(m['lag_p50_s'])}, 95% within "
         f"{duration(m['lag_p95_s'])} and 99% within {duration(m['lag_p99_s'])}; "
         f"{pct(m['loaded_after_day_close'], 2)} arrived after their day had closed.")
    return Html(f'<p style="{_FONT}font-size:16px">{escape(t)}</p>', t)


def summary(report) -> str:
    """The canonical, sorted summary the report notebook ends with (nbval compares it)."""
    doc = _doc(report)
    m, dau = doc["measures"], doc["dau"]
    top = doc["findings"][0] if doc["findings"] else {}
    rows = {"status": doc["status"], "breached": ", ".join(c["name"] for c in doc["breaches"]) or "-",
            "received": count(m["received"]), "loaded": count(m["loaded"]), "dead_lettered": count(m["dead_lettered"]),
            "unexplained_loss": count(m["unexplained_loss"]), "rejected_share": pct(m["rejected_share"], 2),
            "dau": count(dau["warehouse"]), "dau_baseline": count(dau["baseline"]), "dau_change": signed_pct(dau["change_pct"]),
            "verdict": doc["verdict"], "top_finding": f"{top['stage']} {top['kind']}, {segment(top['segment'])}" if top else "-"}
    return "\n".join(f"{k:<18}{rows[k]}" for k in sorted(rows))
