"""The daily quality report: thresholds and checks, the day's figures (``findings.json``), their
rendering for people, and the papermill runner behind ``dqkit report``."""

from dqkit.report.daily import DailyReport, daily_report
from dqkit.report.render import banner, checks_table, dau_panel, findings_table, lag_summary, summary
from dqkit.report.run import EXIT_BREACH, EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_report, validate_params, yesterday
from dqkit.report.thresholds import Check, Thresholds, evaluate

__all__ = ["EXIT_BREACH", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Check", "DailyReport", "Thresholds", "banner",
           "checks_table", "daily_report", "dau_panel", "evaluate", "findings_table", "lag_summary", "run_report", "summary",
           "validate_params", "yesterday"]
