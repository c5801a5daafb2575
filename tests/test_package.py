"""Importing dqkit tunes Polars' allocator, unless the user already did."""

import os
import subprocess
import sys

_PROBE = ("import dqkit, polars as pl; pl.DataFrame({'a': [1]}).sum(); "
          "print(__import__('os').environ.get('_RJEM_MALLOC_CONF'))")


def _conf(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_freed_polars_memory_is_kept_for_the_next_chunk_unless_the_user_says_otherwise():
    # Polars puts its own defaults first and this variable after them; the last value wins.
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    assert _conf(env).endswith(",dirty_decay_ms:3000,muzzy_decay_ms:3000")
    assert _conf({**env, "_RJEM_MALLOC_CONF": "dirty_decay_ms:0"}).endswith(",dirty_decay_ms:0")


def test_charts_under_the_short_name_is_the_investigation_module():
    import dqkit
    import dqkit.charts
    import dqkit.investigate.charts

    assert dqkit.charts is dqkit.investigate.charts
    from dqkit.charts import __name__ as name

    assert name == "dqkit.investigate.charts"


def test_dir_lists_the_lazy_names():
    import dqkit

    names = dir(dqkit)
    assert set(dqkit.__all__) <= set(names)
    for n in dqkit.__all__:
        assert getattr(dqkit, n) is not None
    assert "os" not in names
