"""Re-execute the committed notebooks in notebooks/ and sanitize them for git and nbval.

    python tools/make_notebooks.py                      # all of them
    python tools/make_notebooks.py 03_dau_drop_investigation.ipynb

The .ipynb files are the source: edit them in Jupyter, then run this after a change that moves a
result. Each notebook runs with its default parameters (papermill, cwd ``notebooks/``); what varies
from run to run is then removed: papermill's and the kernel's timing metadata, and the output of
cells tagged ``# NBVAL_IGNORE_OUTPUT`` stays for readers but nbval does not compare it. A notebook
whose outputs show a local path (they would differ on every machine) is refused.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_LOCAL_PATH = re.compile(r"(/home/|/tmp/|/work/|/Users/|[A-Z]:\\\\)[^\s'\"]*")


def sanitize(nb: nbformat.NotebookNode) -> list[str]:
    """Drop volatile metadata in place; returns problems (outputs that show local paths)."""
    nb.metadata.pop("papermill", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    problems = []
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            hit = next((m.group(0) for t in texts for m in [_LOCAL_PATH.search(t if isinstance(t, str) else "".join(t))] if m), None)
            if hit:
                problems.append(f"cell {i} shows a local path ({hit}); print names, not paths")
    return problems


def main(names: list[str]) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from dqkit.report.run import execute

    paths = [NOTEBOOKS / n for n in names] if names else sorted(NOTEBOOKS.glob("*.ipynb"))
    failed = 0
    for path in paths:
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            executed = Path(tmp) / path.name
            execute(path, executed, {}, NOTEBOOKS)
            nb = nbformat.read(str(executed), as_version=4)
        problems = sanitize(nb)
        if problems:
            failed += 1
            print(f"{path.name}: not written:", *problems, sep="\n  ", file=sys.stderr)
            continue
        nbformat.write(nb, str(path))
        print(f"executed {path.relative_to(ROOT)} in {time.perf_counter() - t:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
