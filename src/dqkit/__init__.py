"""dqkit: find out whether a metric drop is real or the pipeline's fault."""

import os as _os

__version__ = "0.1.0"

# Polars' allocator returns freed memory to the system after half a second. A replay frees and
# allocates the same few hundred MB for every chunk, a second or two apart, and faulting those
# pages in again cost up to a tenth of its CPU. Three seconds keeps them for the next chunk
# (10 s held so much that a 10M-event replay peaked 4% higher) and still gives them back once
# work stops. Polars reads this variable, after its own defaults, when it is first imported,
# so it only takes effect if dqkit is imported first; a value the user set is kept.
_os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:3000,muzzy_decay_ms:3000")

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
