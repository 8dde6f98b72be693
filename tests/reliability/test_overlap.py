"""Issue 35 items 2 and 7: an output that equals, contains or lies inside an input is refused by
every writing command (with or without --overwrite), and `prep --out .` is one line, nothing left."""
import os
from pathlib import Path

import pytest
import torch

from masklab.atomic import refuse_overlap
from masklab.cli import main
from masklab.errors import MaskLabError
from masklab.pretrain.checkpoint.store import save_checkpoint

pytestmark = pytest.mark.reliability


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.fixture
def corpus(tmp_path):
    c = tmp_path / "c" / "corpus"
    c.mkdir(parents=True)
    (c / "a.txt").write_text("The thesis chapter one.\n\nAnother paragraph of the only copy.\n")
    return c


@pytest.mark.parametrize("where", ["equal", "parent"])
def test_prep_onto_its_corpus_is_refused_even_with_overwrite(corpus, tmp_path, capsys, where):
    before = _tree(tmp_path)
    out = corpus if where == "equal" else corpus.parent
    rc, err = _cli(capsys, "prep", "--corpus", corpus, "--out", out, "--overwrite", "--vocab-size", "100")
    assert rc == 2 and "refusing to write there" in err and len(err.strip().splitlines()) == 1, err
    assert "pass --overwrite" not in err and ("is the input" if where == "equal" else "contains the input") in err
    assert _tree(tmp_path) == before and sorted(p.name for p in corpus.parent.iterdir()) == ["corpus"]


def test_prep_out_dot_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    for out in (".", "..", "sub/.."):
        rc, err = _cli(capsys, "prep", "--out", out, "--max-documents", "5", "--vocab-size", "100")
        assert rc == 2 and "current directory" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and sorted(os.listdir(here)) == ["notes.txt"]


def _run(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_checkpoint(run, 1, torch.nn.Linear(4, 4), None, {"out_dir": str(run)}, "model: {}\n", None)
    return run


def test_export_onto_its_run_is_refused_and_every_checkpoint_survives(tmp_path, capsys):
    run = _run(tmp_path)
    before = _tree(run)
    ckpt = run / "checkpoints" / "step_00000001"
    for out in (run, ckpt, run.parent, ckpt / "hf"):
        rc, err = _cli(capsys, "export", run, "--out", out, "--overwrite")
        assert rc == 2 and "refusing to write there" in err, err
    rc, err = _cli(capsys, "export", ckpt, "--out", run, "--overwrite")  # the checkpoint lies inside --out
    assert rc == 2 and "contains the input checkpoint" in err, err
    assert _tree(run) == before


# every other writing command: (argv with {IN} / {OUT} placeholders, how --out relates to the input)
COMMANDS = {
    "import": (["import", "{IN}", "--out", "{OUT}"], "equal"),
    "pmi": (["pmi", "--shards", "{IN}", "--out", "{OUT}", "--overwrite"], "inside"),
    "informask-weights": (["informask-weights", "--shards", "{IN}", "--out", "{OUT}", "--overwrite"], "parent"),
    "embed": (["embed", "--model", "{IN}", "--out", "{OUT}"], "inside"),
    "embed-data": (["embed", "--model", "m", "--data", "{IN}", "--out", "{OUT}"], "parent"),
    "classify": (["classify", "--embeddings", "{IN}", "--out", "{OUT}"], "equal"),
    "classify-test": (["classify", "--train", "t", "--test", "x", "{IN}", "--out", "{OUT}"], "parent"),
    "finetune": (["finetune", "--model", "{IN}", "--out", "{OUT}"], "inside"),
    "finetune-data": (["finetune", "--model", "m", "--data", "{IN}", "--out", "{OUT}"], "equal"),
    "carry": (["carry", "--data", "{IN}", "--out", "{OUT}"], "equal"),
    "carry-carriers": (["carry", "--carriers", "{IN}", "--out", "{OUT}"], "parent"),
    "predict": (["predict", "--model", "m", "--data", "{IN}", "--out", "{OUT}"], "equal"),
    "report": (["report", "--runs", "a", "{IN}", "--out", "{OUT}"], "inside"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_writing_command_refuses_an_output_overlapping_an_input(name, tmp_path, capsys):
    argv, how = COMMANDS[name]
    d = tmp_path / "in"
    d.mkdir()
    is_file = "--data" in argv or name == "carry-carriers"
    src = d / "rows.jsonl" if is_file else d / "thing"
    if is_file:
        src.write_text('{"text": "hello", "label": 0}\n')
    else:
        src.mkdir()
        (src / "config.json").write_text("{}")
    out = {"equal": src, "inside": src / "out", "parent": src.parent}[how]
    before = _tree(tmp_path)
    link = tmp_path / "alias"  # through a symlink: real paths are compared
    link.symlink_to(out if how != "inside" else src, target_is_directory=not (is_file and how == "equal"))
    for o in (out, link if how != "inside" else link / "out"):
        rc, err = _cli(capsys, *[str(src) if a == "{IN}" else str(o) if a == "{OUT}" else a for a in argv])
        assert rc == 2 and "refusing to write there" in err and len(err.strip().splitlines()) == 1, (name, err)
    link.unlink()
    assert _tree(tmp_path) == before


def test_helper_cases(tmp_path, tmp_path_factory, monkeypatch):
    a = tmp_path / "a"
    (a / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    for out, inp, word in ((a, a, "is"), (tmp_path, a, "contains"), (a / "b" / "c", a, "lies inside"),
                           (f"{a}/b/../../a", a, "is"), (f"{a}/b/.", a, "lies inside")):
        with pytest.raises(MaskLabError, match=f"{word} the input x"):
            refuse_overlap(out, {"x": inp})
    refuse_overlap(tmp_path / "sibling", {"x": a, "hub": "user/name", "none": None})  # no overlap: fine
    refuse_overlap(tmp_path / "ab", {"x": a})  # a prefix of the name is not containment
