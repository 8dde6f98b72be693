"""Names and noise, fine-tuning defaults and progress, model selection and --threshold-data in
classify / finetune (issue 34, items 2, 4, 5)."""
import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

from masklab.cli import main

from .toydata import toy_rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    rows = [{"id": i, "text": r["prompt"], "label": r["y"], "lang": r["lang"]} for i, r in enumerate(toy_rows(4))]
    _write(d / "train.jsonl", [r for r in rows if r["lang"] == "de"])
    _write(d / "val.jsonl", [r for r in rows if r["lang"] == "en"])
    # unlabelled benign traffic for thresholds: every row counts as benign
    _write(d / "traffic.jsonl", [{"text": f"{r['text']} today"} for r in rows if r["label"] == "benign"])
    return d


@pytest.mark.parametrize("stage", ["embed", "classify", "predict", "finetune", "ensemble", "carry", "report"])
def test_help_prints_each_default_once(stage, capsys):
    with pytest.raises(SystemExit):
        main([stage, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    for option in re.split(r" (?=--?[A-Za-z])", text):  # each option's help on its own
        assert option.lower().count("default") <= 1, option


def test_finetune_help_states_its_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "as `embed`" in text and "mean" in text and "256 for all-MiniLM-L6-v2" in text and "(default: 3)" in text


def test_new_classification_head_is_one_line(tiny_bert_dir, caplog, capfd):
    from masklab.downstream.finetuning.model import build

    with caplog.at_level(logging.INFO, logger="masklab.downstream"):
        build(tiny_bert_dir, "cls", 0)
    out = capfd.readouterr()
    assert "MISSING" not in out.err + out.out and "UNEXPECTED" not in out.err + out.out
    assert "new classification head initialised (4 weights); 5 pretraining-head weights unused" in caplog.text


def test_third_party_chatter_is_off_unless_verbose():
    """In a fresh process: the hub's switch is read once at import, so an earlier in-process command would
    decide it for every later test."""
    code = textwrap.dedent("""
        import argparse, logging, sys
        import datasets, transformers
        from masklab.downstream.cli_args import quiet as _quiet
        _quiet(argparse.Namespace(verbose=sys.argv[1] == "1"))
        print(datasets.is_progress_bar_enabled(), transformers.logging.get_verbosity() == logging.ERROR)
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    got = [subprocess.run([sys.executable, "-c", code, v], capture_output=True, text=True, env=env).stdout.split()
           for v in ("1", "0")]
    assert got == [["True", "False"], ["False", "True"]], got


def test_progress_log_lines_when_not_a_tty(caplog, monkeypatch):
    """The engine's progress (GLUE and finetune): log lines with epoch, step/total and ETA off a terminal."""
    from masklab.downstream.finetuning.engine import _Progress

    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    p = _Progress(total=4, start=0, per_epoch=2, desc="finetune", enabled=True)
    with caplog.at_level(logging.INFO, logger="masklab.finetune"):
        for step in range(1, 5):
            p.update(step, 0.5, 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and "finetune: epoch 2/2, step 4/4 (100%): loss 0.5000" in lines[-1], lines
    assert "eta 0s" in lines[-1] and "epoch 1/2, step 1/4 (25%)" in lines[0]


def test_finetune_defaults_follow_embed(tiny_bert_dir, tmp_path):
    """A sentence-transformers directory's pooling and max_seq_length, as `embed` reads them."""
    import shutil

    from masklab.downstream.finetuning.model import FinetuneConfig, source_defaults

    d = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, d)
    (d / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                                                {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    got = source_defaults(d, FinetuneConfig())
    assert (got.pooling, got.max_length) == ("cls", 16)
    assert (source_defaults(d, FinetuneConfig(pooling="mean", max_length=8)).pooling, 8) == ("mean", 8)
    plain = source_defaults(tiny_bert_dir, FinetuneConfig())
    assert (plain.pooling, plain.max_length) == ("mean", None)  # None: the model's maximum, later


def test_finetune_threshold_data_and_progress(tiny_bert_dir, files, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="masklab"):
        rc = main(["finetune", "--model", str(tiny_bert_dir), "--data", str(files / "train.jsonl"),
                   "--val-data", str(files / "val.jsonl"), "--test-fraction", "0", "--epochs", "1", "--max-steps",
                   "2", "--batch-size", "8", "--max-length", "32", "--target-fpr", "0.25",
                   "--threshold-data", str(files / "traffic.jsonl"), "--out", str(tmp_path / "ft")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "for 0.25 FPR, set on --threshold-data" in out and "6 of 24 benign rows beyond it" in out
    assert "finetune: epoch 1/1, step 2/2 (100%)" in caplog.text and "eta 0s" in caplog.text
    saved = json.loads((tmp_path / "ft" / "model" / "masklab_finetune.json").read_text())
    assert saved["pooling"] == "mean" and saved["operating_point"]["chosen_on"].startswith("--threshold-data")
    assert saved["threshold"] == saved["operating_point"]["threshold"] and saved["operating_point"]["n_benign"] == 24


def test_classify_threshold_data_and_select_by(files, tmp_path, capsys):
    rc = main(["classify", "--train", str(files / "train.jsonl"), "--val", str(files / "val.jsonl"), "--test",
               str(files / "val.jsonl"), "--classifiers", "tfidf", "--threshold-data", str(files / "traffic.jsonl"),
               "--select-by", "tpr_at_fpr", "--target-fpr", "0.25", "--bootstrap", "0", "--out", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation table (--select-by tpr_at_fpr)" in out and "* tfidf" in out
    assert "fpr_at_target_fpr_threshold" in out and "fpr_at_val_threshold" not in out
    assert "set on --threshold-data" in out and "6 of 24 benign rows beyond it" in out and "[WEAK" in out
    info = json.loads((tmp_path / "c" / "bundle" / "bundle.json").read_text())
    assert info["operating_point"]["chosen_on"].startswith("--threshold-data") and info["select_by"] == "tpr_at_fpr"
    assert info["threshold"] == info["operating_point"]["threshold"]


def test_select_by_changes_the_choice():
    from masklab.downstream.evaluation.selection import select, selection_table

    s = lambda v: {"mean": v}  # noqa: E731
    table = {"tfidf": {"roc_auc": s(1.0), "tpr_at_target_fpr_threshold": s(0.4)},
             "lr": {"roc_auc": s(0.95), "tpr_at_target_fpr_threshold": s(0.7)}}
    assert select(table, "auc") == "tfidf" and select(table, "tpr_at_fpr") == "lr"
    assert "* lr" in selection_table(table, "lr", "tpr_at_fpr")


def test_embed_hides_datasets_generating_split_unless_verbose(tiny_bert_dir, tmp_path):
    """Fresh processes, as a user runs them (the switches are process-wide and read at import)."""
    import uuid

    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    for verbose in (True, False):
        f = _write(tmp_path / f"{verbose}.jsonl", [{"text": f"{uuid.uuid4()} text {i}", "label": i % 2} for i in range(4)])
        args = ["embed", "--model", str(tiny_bert_dir), "--data", str(f), "--out", str(tmp_path / f"e{verbose}"),
                "--no-progress"] + (["--verbose"] if verbose else [])
        r = subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("Generating train split" in r.stderr) == verbose, r.stderr[-500:]
