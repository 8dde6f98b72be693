"""The benchmark scripts must keep running (numbers are not asserted: benchmarks are not tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script, *args, tmp_path):
    out = tmp_path / "t.md"
    module = "benchmarks." + script.removesuffix(".py")
    r = subprocess.run([sys.executable, "-m", module, *args, "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return out.read_text()


# the device command, benchmarks/gpu_first.sh, is rehearsed in test_gpu_first.py


def test_late_masking_runs(tmp_path):
    text = _run("late_masking.py", "--steps", "1", "--layers", "3", "--hidden", "64", tmp_path=tmp_path)
    assert "late insertion at layer 1" in text


def test_scale_quick(tmp_path):
    text = _run("scale.py", "--quick", tmp_path=tmp_path)
    assert ("| corpus MB | tokens | 1 proc wall s | 1 proc s/GB | 2 procs wall s | 2 procs s/GB | speedup | "
            "prep tokens/CPU-s | raw encode_batch tokens/CPU-s | ratio |") in text
    assert "(train tokenizer" in text and "\n| 0.2 |" in text and "\n| 1 |" in text and "\n| 4 |" in text
    # five target lines, each judged from the figures above
    assert len([l for l in text.splitlines() if l.startswith(("- met: ", "- MISSED: "))]) == 5


def test_data_input_quick(tmp_path):
    text = _run("data_input.py", "--quick", tmp_path=tmp_path)
    assert ("| train tokens | first start s | second start s | shard open ms | full verify s | RSS MB | "
            "rank RssAnon MB | worker RssAnon MB | worker VmHWM MB |") in text
    assert len([l for l in text.splitlines() if l.startswith("| ") and l[2].isdigit()]) == 3


def test_packing_quick(tmp_path):
    text = _run("packing.py", "--quick", tmp_path=tmp_path)
    assert "| packing | budget | units/step | sequences/step (timed steps) | tokens/step | tokens/step CV |" in text
    for packing in ("none", "docs", "concat"):
        assert f"| {packing} | samples (batch_size=8) |" in text and f"| {packing} | tokens (batch_tokens=4096) |" in text


def test_token_drop_quick(tmp_path):
    text = _run("token_drop.py", "--quick", tmp_path=tmp_path)
    assert "| chunks of 512, batch 8 | token dropping |" in text and "| token dropping (0.5, layers [1, 3)) | 4 |" in text


def test_detection_quick_has_cross_source_rows(tmp_path):
    text = _run("detection.py", "--quick", "--checkpoint", str(tmp_path / "none"), tmp_path=tmp_path)
    assert "Detection across sources" in text and "| lang: en -> de/fr/es/it |" in text
    assert "| channel: user_input -> tool_output/memory |" in text and "test FPR @ val thr (5% FPR)" in text
    assert "FPR upper 95% (val)" in text and "| rank average |" in text and "| logistic stack (2-fold cross-fitted) |" in text


def test_pmi_scale_quick(tmp_path):
    """The PMI-scale benchmark and its Markov corpus generator (it once rotted unnoticed)."""
    text = _run("pmi_scale.py", "--quick", "--memory-limit", "256MB", tmp_path=tmp_path)
    assert "| M tokens | engine | build s |" in text and "| duckdb |" in text and "| numpy |" in text


def test_detection_documents_quick(tmp_path):
    import pytest

    from masklab.downstream.data.carriers import HANDBOOK

    if not (HANDBOOK / "de-DE").is_dir():
        pytest.skip("Debian's debian-handbook is not installed (apt install debian-handbook): the test documents "
                    "are built from it")
    text = _run("detection_documents.py", "--quick", tmp_path=tmp_path)
    assert "| char TF-IDF (2-5) | prompts + carriers | tfidf |" in text and "4 languages" in text


def test_cli_startup_runs(tmp_path):
    text = _run("cli_startup.py", "--quick", tmp_path=tmp_path)
    assert "| masklab prep --help |" in text and "import torch" in text
def test_glue_speed_quick(tmp_path):
    text = _run("glue_speed.py", "--quick", tmp_path=tmp_path)
    assert "| MaskLab engine (unpadded, length-grouped) |" in text and "vs HF dynamic padding" in text
    assert "Target: >= 2x HF dynamic padding:" in text


def test_sweeps_summary_maps_compare_verdicts_onto_the_papers_claims(tmp_path, monkeypatch):
    """A paired difference on the paper's side of 0 is 'direction reproduced'; the other side is
    'opposite'; an interval holding 0 is 'within noise'; a recipe without a report is named as not run."""
    import json

    from benchmarks import sweeps_summary as s

    monkeypatch.setattr(s, "SWEEPS", tmp_path)
    d = tmp_path / "ankner_schedule"
    d.mkdir()
    row = lambda mean, lo, hi, v: {"mean": mean, "lo": lo, "hi": hi, "n": 3,  # noqa: E731
                                   "diff": mean - 5, "diff_lo": lo - 5, "diff_hi": hi - 5, "verdict": v}
    (d / "summary.json").write_text(json.dumps({"baseline": "constant15", "level": 0.95, "metrics": {
        "constant15": {"val_loss": {"mean": 5.0, "lo": 4.9, "hi": 5.1, "n": 3},
                       "mlm_acc": {"mean": 5.0, "lo": 4.9, "hi": 5.1, "n": 3},
                       "mlm_loss": {"mean": 5.0, "lo": 4.9, "hi": 5.1, "n": 3}},
        "linear30to15": {"val_loss": row(4.8, 4.7, 4.9, "better"), "mlm_acc": row(4.8, 4.7, 4.9, "worse"),
                         "mlm_loss": row(5.0, 4.9, 5.1, "within noise")}},
        "compute": {"constant15": [3, "500.0", "8e5", "5e12", "60", "20", "0.050", "800", "3"],
                    "linear30to15": [3, "500.0", "8e5", "6e12", "61", "20", "0.051", "800", "3"]}}))
    (d / "VERDICT.md").write_text("Interpretation written by hand.")
    out = tmp_path / "r.md"
    assert s.main(["--out", str(out)]) == 0
    md = out.read_text()
    assert "| linear30to15 vs constant15 | val_loss | 4.8 vs 5 | -0.2 [-0.3, -0.1] (n=3) | direction reproduced |" in md
    assert "| mlm_acc |" in md and "opposite" in md and "within noise at this scale" in md
    assert "6 cells, 0.10 training CPU-hours" in md and "Interpretation written by hand." in md
    assert "Not run yet: wettig_rate, units" in md
