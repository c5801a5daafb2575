"""dqkit: find out whether a metric drop is real or the pipeline's fault."""

__version__ = "0.1.0"

__all__ = ["__version__", "charts", "diagnose", "explain", "load_spans", "reconcile", "replay"]


def __getattr__(name: str):
    # Imported lazily: `import dqkit` stays cheap for the CLI and the notebooks.
    if name == "replay":
        from dqkit.pipeline.run import replay

        return replay
    if name == "load_spans":
        from dqkit.investigate.spans import load_spans

        return load_spans
    if name == "reconcile":
        from dqkit.investigate.reconcile import reconcile

        return reconcile
    if name == "diagnose":
        from dqkit.investigate.diagnose import diagnose

        return diagnose
    if name == "explain":
        from dqkit.investigate.explain import explain

        return explain
    if name == "charts":
        from dqkit.investigate import charts

        return charts
    raise AttributeError(f"module 'dqkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names above are not in globals() until first used; list them anyway.
    return sorted(set(globals()) | set(__all__))
