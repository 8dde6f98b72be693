"""`masklab glue` end to end, offline, on GLUE-format fixture directories: a tiny MaskLab
checkpoint and MiniLM on the five small tasks (table printed, cells skipped on rerun, baseline
differences, chart), resume after a kill -9 (the same result as an unkilled run), bad inputs."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from masklab.cli import main

from .glue_fixture import write_glue_dir

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "tasks.cola.epochs=1", "--set", "tasks.mrpc.epochs=1", "--set", "tasks.stsb.epochs=1",
        "--set", "tasks.rte.epochs=2", "--no-progress"]


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_dir(tmp_path_factory.mktemp("glue"), n_train=96, n_dev=48)


def test_tiny_checkpoint_small_tasks_table_skip_and_baseline(tiny_ckpt, glue_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["glue", str(tiny_ckpt), "--out", str(out), "--data", str(glue_dir), "--tasks", "small", "--seeds", "1",
            *FAST, "--set", "tasks.rte.epochs=1", "--max-train", "48"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "Average over 5 task(s): rte, sst2, mrpc, cola, stsb (not the GLUE average)" in table
    assert "| CoLA (MCC) |" in table and "seed 1" in table and "subsampled 48 of 96 rows" in table
    cell = json.loads((out / "stsb" / "seed_1" / "results.json").read_text())
    assert set(cell["dev"]["dev"]) == {"pearson", "spearman", "score"} and cell["steps"] == 2  # 48 rows / 32
    assert not (out / "stsb" / "seed_1" / "work").exists()  # the checkpoint went with the finished cell
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["tasks"]["rte"]["scores"]) == {"1"} and (out / "results.png").stat().st_size > 1000
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/results.json")}
    assert len(mtimes) == 5
    assert main(args) == 0  # rerun: every cell skipped
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/results.json")} == mtimes
    capsys.readouterr()
    # other settings into the same --out: refused, not mixed into the table
    assert main([*args[:-2], "--max-train", "40"]) == 2
    assert "holds a result of other settings" in capsys.readouterr().err
    # a second run (2 seeds) against the first as baseline
    out2 = tmp_path / "run2"
    assert main(["glue", str(tiny_ckpt), "--out", str(out2), "--data", str(glue_dir), "--tasks", "rte,cola",
                 "--seeds", "1,2", *FAST, "--set", "tasks.rte.epochs=1", "--set", "tasks.rte.lr=1e-4",
                 "--max-train", "48", "--baseline", str(out / "results.json")]) == 0
    table = capsys.readouterr().out
    assert "baseline median" in table and "n/a (< 2 seeds)" in table and "over rte, cola" in table


def test_report_difference_interval():
    from masklab.downstream.glue.report import markdown

    def summary(scores):
        return {"model": "m", "recipe": "r", "seeds": [1, 2, 3], "wall_s": 0, "average": 0.0, "average_over": ["rte"],
                "average_label": "Average over 1 task(s): rte (not the GLUE average)",
                "tasks": {"rte": {"scores": dict(zip("123", scores)), "median": sorted(scores)[1], "train": "x"}}}

    md = markdown(summary([60.0, 62.0, 64.0]), summary([50.0, 51.0, 55.0]))
    row = next(line for line in md.splitlines() if line.startswith("| RTE"))
    # Welch: diff of means 10.0, se = sqrt(4/3 + 7/3), df = 3.73..., t(0.975) = 2.87...
    assert "+11.00" in row and "[+4." in row and ", +15." in row


def test_minilm_five_small_tasks(minilm, glue_dir, tmp_path, capsys):
    out = tmp_path / "minilm"
    assert main(["glue", str(minilm), "--out", str(out), "--data", str(glue_dir), "--tasks", "small", "--seeds", "1",
                 *FAST, "--set", "tasks.rte.epochs=1", "--set", "tasks.sst2.lr=1e-4", "--set", "tasks.stsb.lr=1e-4",
                 "--max-train", "64", "--max-eval", "32"]) == 0
    table = capsys.readouterr().out
    s = json.loads((out / "results.json").read_text())
    assert s["average_over"] == ["rte", "sst2", "mrpc", "cola", "stsb"]
    # the fixtures carry a keyword signal: a real encoder learns it in one epoch of 64 rows
    assert s["tasks"]["sst2"]["median"] > 70, table
    assert s["tasks"]["stsb"]["median"] > 30, table


_KILL = """
import os, signal, sys
from masklab.downstream.finetuning import engine
real = engine.lr_factor
def lr_factor(step, total, warmup):  # called once per optimizer step: die hard at step K
    if step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(step, total, warmup)
engine.lr_factor = lr_factor
from masklab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_kill_matches_unkilled_run(tiny_ckpt, glue_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "KILL_AT": "5"}
    args = ["glue", str(tiny_ckpt), "--data", str(glue_dir), "--tasks", "rte", "--seeds", "3", "--no-progress",
            "--set", "tasks.rte.epochs=3", "--max-train", "48"]  # 48 / 16 = 3 steps per epoch; killed at step 5
    killed = subprocess.run([sys.executable, "-c", _KILL, *args, "--out", str(tmp_path / "a")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = json.loads((tmp_path / "a" / "rte" / "seed_3" / "work" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and not (tmp_path / "a" / "rte" / "seed_3" / "results.json").exists()
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # resumes at step 3
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # never killed
    a, b = (json.loads((tmp_path / d / "rte" / "seed_3" / "results.json").read_text()) for d in "ab")
    assert a["steps"] == b["steps"] == 9
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["train_loss"] == hb["train_loss"] and ha["dev"] == hb["dev"]


def test_bad_inputs(tiny_ckpt, glue_dir, tmp_path, capsys):
    base = ["glue", str(tiny_ckpt), "--out", str(tmp_path / "o"), "--no-progress"]
    cases = [
        ([*base, "--data", str(glue_dir), "--tasks", "cola,wnli"], "unknown GLUE task"),
        ([*base, "--data", str(tmp_path / "nope"), "--tasks", "cola"], "not a directory"),
        (["glue", str((tmp_path / "empty").mkdir() or tmp_path / "empty"), "--out", str(tmp_path / "o"), "--data",
          str(glue_dir)], "neither a MaskLab checkpoint"),
        ([*base, "--data", str(glue_dir), "--tasks", "mnli", "--set", "tasks.mnli.lrr=1"], "Key 'lrr' not in"),
        ([*base, "--data", str(glue_dir), "--tasks", "rte", "--mnli-start", "--seeds", "1"], "--mnli-start:"),
        ([*base, "--custom", "x", "--data", str(glue_dir)], "--custom NAME needs"),
        ([*base, "--data", str(glue_dir), "--tasks", "cola", "--baseline", str(glue_dir / "CoLA" / "dev.tsv")],
         "cannot read a GLUE results.json"),
    ]
    cases += [([*base[:3], str(glue_dir / "out"), "--data", str(glue_dir), "--tasks", "cola"], "overlaps the input"),
              ([*base[:3], str(tiny_ckpt), "--data", str(glue_dir), "--tasks", "cola"], "overlaps the input"),
              ([*base, "--data", str(glue_dir), "--tasks", "cola", "--max-train", "-1"], "--max-train must be >= 0")]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        assert msg in capsys.readouterr().err, argv
    # a second process on the same cell (two runs into one --out, a resubmitted array): refused by name
    from masklab.pretrain.checkpoint.run_lock import RunLock

    with RunLock(tmp_path / "o" / "cola" / "seed_1"):
        assert main([*base, "--data", str(glue_dir), "--tasks", "cola", "--seeds", "1"]) == 2
    assert "is being computed by another masklab glue process (host" in capsys.readouterr().err


def test_custom_task_end_to_end(tiny_ckpt, tmp_path, capsys):
    rows = [{"text": f"{'secret' if i % 2 else 'weather'} word {i}", "y": "pos" if i % 2 else "neg"} for i in range(32)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["glue", str(tiny_ckpt), "--out", str(tmp_path / "o"), "--custom", "toy", "--custom-train",
                 str(tmp_path / "train.jsonl"), "--custom-dev", str(tmp_path / "dev.jsonl"), "--text-columns", "text",
                 "--label-column", "y", "--metric", "f1", "--seeds", "1", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| toy |" in table and "Average over 1 task(s): toy" in table


def test_slurm_executor_dry_run_then_cells_and_gather(tiny_ckpt, glue_dir, tmp_path, capsys):
    """What the array elements and the gather job run, without a cluster: the job file lists the
    unfinished cells, each element runs one, the gather job writes the table; a rerun submits only
    what is missing (tests/slurm runs it on the local cluster)."""
    from masklab.downstream.glue import slurm

    out = tmp_path / "s"
    args = ["glue", str(tiny_ckpt), "--out", str(out), "--data", str(glue_dir), "--tasks", "rte,cola", "--seeds", "1,2",
            *FAST, "--set", "tasks.rte.epochs=1", "--max-train", "32", "--executor", "slurm", "--dry-run",
            "--sbatch-args", "--partition=debug --time=00:20:00"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "--array=0,1,2,3" in printed and "--partition=debug" in printed and "GATHER=1" in printed
    assert "--dependency=afterany:DRYRUN" in printed and "slurm/glue.sbatch" in printed
    jf = out / ".slurm" / "job.json"
    assert [tuple(c) for c in json.loads(jf.read_text())["cells"]] == [("rte", 1), ("rte", 2), ("cola", 1), ("cola", 2)]
    assert slurm.main(["cell", str(jf), "1"]) == 0  # element 1: rte seed 2
    assert slurm.main(["gather", str(jf)]) == 1  # three cells missing: named, exit 1
    assert "missing cells" in capsys.readouterr().err
    assert main(args) == 0  # rerun: only the 3 unfinished cells
    assert "--array=0,1,2" in capsys.readouterr().out
    cells = json.loads(jf.read_text())["cells"]
    assert ["rte", 2] not in cells and len(cells) == 3
    for i in range(3):
        assert slurm.main(["cell", str(jf), str(i)]) == 0
    assert slurm.main(["gather", str(jf)]) == 0
    assert "Average over 2 task(s): rte, cola" in (out / "results.md").read_text()
    assert slurm.main(["cell", str(jf), "7"]) == 2


def test_mnli_matched_mismatched_and_mnli_start(tiny_ckpt, glue_dir, tmp_path, monkeypatch):
    """MNLI's score is the mean of matched and mismatched accuracy; --mnli-start begins RTE from the
    MNLI model of the same seed (everything but the 3-way classifier)."""
    import torch
    from safetensors.torch import load_file

    from masklab.downstream.finetuning import engine

    out = tmp_path / "m"
    seen = {}
    real_fit = engine.fit

    def fit(model, *a, **k):  # the weights RTE starts from
        seen[k.get("desc", "")] = {n: t.detach().clone() for n, t in model.state_dict().items()}
        return real_fit(model, *a, **k)

    monkeypatch.setattr(engine, "fit", fit)
    assert main(["glue", str(tiny_ckpt), "--out", str(out), "--data", str(glue_dir), "--tasks", "mnli,rte",
                 "--mnli-start", "--seeds", "1", "--max-train", "48", "--set", "tasks.mnli.epochs=1",
                 "--set", "tasks.rte.epochs=1", "--no-progress"]) == 0
    m = json.loads((out / "mnli" / "seed_1" / "results.json").read_text())
    acc = [m["dev"][k]["acc"] for k in ("dev_matched", "dev_mismatched")]
    assert m["score"] == pytest.approx(sum(acc) / 2)
    mnli_weights = load_file(str(out / "mnli" / "seed_1" / "model.safetensors"))
    start = seen["rte seed 1"]
    assert json.loads((out / "rte" / "seed_1" / "results.json").read_text())["mnli_start"] is True
    assert all(torch.equal(start[k], v) for k, v in mnli_weights.items()) and "classifier.weight" not in mnli_weights


def test_sweep_glue_evaluation_plugin(tiny_ckpt, glue_dir, tmp_path):
    """The sweep's `glue` evaluation resolves to the harness and returns a score per task + the average."""
    from omegaconf import OmegaConf

    from masklab.sweep.evaluations import CellContext, resolve
    from masklab.sweep.spec import SweepSpec

    spec = OmegaConf.structured(SweepSpec)
    spec.glue.data, spec.glue.tasks, spec.glue.max_train, spec.glue.max_steps = str(glue_dir), "rte,stsb", 32, 1
    got = resolve("glue")(CellContext(cell_dir=tmp_path, model_dir=str(tiny_ckpt), cfg=None, spec=spec))
    assert set(got) == {"glue_rte", "glue_stsb", "glue_average"}, got
    assert got["glue_average"] == pytest.approx((got["glue_rte"] + got["glue_stsb"]) / 2)
    assert (tmp_path / "eval" / "glue" / "rte" / "seed_19" / "results.json").is_file()
