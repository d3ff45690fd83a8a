"""The output-hygiene rules of book/conftest.py, on hand-made cell outputs."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "book_conftest", Path(__file__).resolve().parent.parent / "book" / "conftest.py"
)
hygiene = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hygiene)


def result(plain, **more):
    return {"output_type": "execute_result", "data": {"text/plain": plain, **more}}


def test_clean_outputs_pass():
    outs = [
        {"output_type": "stream", "name": "stdout", "text": "3600 training frames\n"},
        result("((3600, 1, 16, 16), 0.0, 1.0)"),
        result("<Figure size 640x480 with 1 Axes>", **{"image/png": "..."}),
        result("   auc\nall 0.9", **{"text/html": "<table>"}),
        {"output_type": "display_data", "data": {"text/markdown": "AUC **0.93**"}},
        result("simulated PANOSETI benchmark, AsinhStretch: 3600 training frames"),
    ]
    assert hygiene.problems(outs) == []


def test_each_defect_is_caught():
    bad = [
        {"output_type": "stream", "name": "stderr", "text": "100%|####| 3/3\n"},
        {"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []},
        result("<Figure size 640x480 with 1 Axes>"),
        result("PHBenchmark(x_train=array([[0, 1]]))"),
        result("[<matplotlib.lines.Line2D at 0x7f>]"),
        result("<phbook.models.vae.BetaVAE object at 0x7f12ab>"),
        {"output_type": "stream", "name": "stdout", "text": "beta $\\beta$ = 1"},
        {"output_type": "stream", "name": "stdout", "text": "see {cite}`kingma`"},
        {"output_type": "display_data", "data": {"text/markdown": "as {cite:t}`x` said"}},
        {"output_type": "stream", "name": "stdout", "text": "UserWarning: bad"},
    ]
    for out in bad:
        assert hygiene.problems([out]), out
