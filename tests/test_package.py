"""Importing dqkit changes nothing in the process; the dqkit command tunes Polars' allocator
for a replay, before Polars loads, unless the user already did."""

import os
import subprocess
import sys

_VAR = "_RJEM_MALLOC_CONF"
_IMPORT = "import os, dqkit; print(os.environ.get('_RJEM_MALLOC_CONF'))"
_IMPORT_RUN = "import os, dqkit.pipeline.run; print(os.environ.get('_RJEM_MALLOC_CONF'))"
_OURS = "dirty_decay_ms:3000,muzzy_decay_ms:3000"
# The command's group runs first, then a subcommand (generate: the quickest that imports Polars).
_CLI = ("import os, sys; from dqkit import cli\n"
        "try:\n    cli.main(['generate', '--events', '50', '--users', '5', '--out', sys.argv[1]])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print(os.environ.get('_RJEM_MALLOC_CONF'), 'polars' in sys.modules)")


def _run(code: str, env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != _VAR}


def test_importing_dqkit_leaves_the_environment_alone():
    assert _run(_IMPORT, _env()) == "None"
    # Polars writes its own defaults there when it loads; dqkit adds nothing of its own.
    assert _OURS not in _run(_IMPORT_RUN, _env())


# Polars puts its own defaults first and the variable's value after them; the last value wins.
def test_the_command_keeps_freed_polars_memory_for_the_next_chunk(tmp_path):
    conf, polars_loaded = _run(_CLI, _env(), str(tmp_path / "a")).split()
    assert conf.endswith("," + _OURS) and polars_loaded == "True"


def test_a_setting_the_user_made_is_kept(tmp_path):
    conf, _ = _run(_CLI, {**_env(), _VAR: "dirty_decay_ms:0"}, str(tmp_path / "b")).split()
    assert conf.endswith(",dirty_decay_ms:0") and _OURS not in conf


def test_keep_freed_memory_says_whether_it_came_in_time():
    code = ("from dqkit.allocator import keep_freed_memory; a = keep_freed_memory(); import polars; "
            "print(a, keep_freed_memory())")
    assert _run(code, _env()) == "True False"


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
