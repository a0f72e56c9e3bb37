"""Every notebook in notebooks/ executes without a cell error, and is stored without outputs.

The notebooks run in the ``python3`` kernel of the interpreter running the tests (ipykernel
in the same virtual env), with the working directory ``notebooks/`` as in Jupyter.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FAMILIES = ("act", "warp", "gain", "reasoner")
TIMEOUT_S = 300  # per cell; each notebook takes well under a minute on one thread


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_one_notebook_per_family():
    names = {p.stem for p in notebooks()}
    missing = [f for f in FAMILIES if f not in names]
    assert not missing, f"notebooks/ has no notebook for {missing}"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before committing"
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "torch.set_num_threads(1)" in first.source, f"{path.name}: the first code cell must set one torch thread"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_executes(path: Path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as err:  # the message holds the cell source and the traceback
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # without the terminal colours
        pytest.fail(f"{path.name}: a cell failed\n{plain}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
