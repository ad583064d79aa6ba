"""Every gallery example runs, at small settings, so the tutorials cannot rot.

Each script is executed as written except for its training length and
sampling steps, cut down by rewriting the numbers (``epochs=30`` ->
``epochs=1``, ``"--epochs", "60"`` -> ``"--epochs", "1"``, and the same
for ``num_inference_steps``): every call, file and figure of the tutorial
runs, only shorter. The full-length gallery is built by the docs.
"""

import os
from pathlib import Path
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = sorted((Path(__file__).parents[1] / "doc" / "examples").glob("example_*.py"))
SHORTER = [
    (r"\bepochs=\d+", "epochs=1"),
    (r'"--epochs",(\s*)"\d+"', r'"--epochs",\1"1"'),
    (r"\bnum_inference_steps=\d+", "num_inference_steps=4"),
    (r'"--num_inference_steps",(\s*)"\d+"', r'"--num_inference_steps",\1"4"'),
]


def shortened(source):
    for pattern, replacement in SHORTER:
        source = re.sub(pattern, replacement, source)
    return source


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 4
    # the rewriting finds something to shorten in each training example
    for path in EXAMPLES:
        source = path.read_text()
        if "fit(" in source or "dipy_train" in source:
            assert shortened(source) != source, path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, tmp_path):
    script = tmp_path / path.name
    script.write_text(shortened(path.read_text()))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
