"""Packaging hook: ship the geo-IP tables and the notebooks inside the wheel.

``data/geoip/`` and ``notebooks/`` at the top of the repository stay the source of truth. Every
build (``pip install .``, ``pip wheel .``, a wheel built from the sdist) copies them into the
package as ``dqkit/data/geoip/`` and ``dqkit/notebooks/``, where an installed dqkit looks for
them (``dqkit.pipeline.geoip.default_geoip_dir``, ``dqkit.report.notebooks_dir``). An editable
install needs no copy: the code finds the top-level folders of the checkout first.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {  # folder in the package: (folder in the repository, files)
    "data/geoip": ("data/geoip", ("*.parquet", "README.md")),
    "notebooks": ("notebooks", ("*.ipynb", "README.md")),
}


class BuildWithData(build_py):
    """``build_py`` that also copies the bundled data into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for target, (source, patterns) in BUNDLED.items():
            files = sorted({f for pattern in patterns for f in (ROOT / source).glob(pattern)})
            if not any(f.suffix != ".md" for f in files):
                raise SystemExit(f"dqkit build: nothing to bundle in {ROOT / source}; is the checkout complete?")
            dest = Path(self.build_lib) / "dqkit" / target
            self.mkpath(str(dest))
            for f in files:
                self.copy_file(str(f), str(dest / f.name))


setup(cmdclass={"build_py": BuildWithData})
