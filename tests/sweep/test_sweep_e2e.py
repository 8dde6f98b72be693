"""`masklab sweep` + `masklab compare` end to end, locally: 2 variants x 2 seeds, killed (SIGKILL to the
whole process group) while the second cell trains, rerun: the finished cell is skipped, the killed
one resumes from its checkpoint, the rest run; then the report."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.sweep.conftest import write_spec

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "masklab.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _segments(cell_dir):
    f = cell_dir / "usage.jsonl"
    return [json.loads(l) for l in f.read_text().splitlines() if '"start"' in l] if f.is_file() else []


def test_killed_sweep_resumes_skipping_finished_cells_then_compares(prepared_data, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in [
        {"good": "The function returns a list.", "bad": "The function return a lists."},
        {"good": "Each module has its own namespace.", "bad": "Each module have its own namespaces."}]))
    spec_file = write_spec(tmp_path / "spec.yaml", prepared_data, evaluations=["evaluate", "minimal_pairs"],
                           minimal_pairs={"path": str(pairs)})
    out = tmp_path / "sweep"
    p = _cli("sweep", str(spec_file), "--out", str(out), start_new_session=True)
    plan = out / "plan.json"
    t0 = time.time()
    while time.time() - t0 < 300:  # wait: cell 1 finished and cell 2 has a checkpoint
        if plan.is_file():
            cells = json.loads(plan.read_text())["cells"]
            first, second = (out / "cells" / c["hash"] for c in cells[:2])
            if (first / "eval_minimal_pairs.json").is_file() and list((second / "run" / "checkpoints").glob("step_*")):
                break
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (second / "trained.json").exists(), "the kill came too late: the second cell had finished"
    done_mtime = (first / "trained.json").stat().st_mtime

    p = _cli("sweep", str(spec_file), "--out", str(out), "--compare", "--parallel", "2")
    log = p.communicate(timeout=600)[0]
    assert p.returncode == 0, log
    assert f"({first.name}): finished, skipped" in log and "resuming cell" in log
    assert (first / "trained.json").stat().st_mtime == done_mtime and len(_segments(first)) == 1
    assert len(_segments(second)) == 2  # killed segment + resumed one
    assert "1 killed" in (out / "report" / "report.md").read_text()
    resumed = (second / "log.txt").read_text()
    assert "resumed from" in resumed
    cells = json.loads(plan.read_text())["cells"]
    for c in cells:  # every cell trained its planned steps and spent its planned FLOPs
        d = out / "cells" / c["hash"]
        last = [json.loads(l) for l in (d / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l][-1]
        assert last["step"] == c["max_steps"]
        assert abs(last["flops_seen"] - c["max_steps"] * c["flops_per_step"]) <= 0.25 * last["flops_seen"]
        steps = [json.loads(l)["step"] for l in (d / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
        assert steps == sorted(set(steps))  # no step logged twice after the resume
    rep = out / "report"
    md = (rep / "report.md").read_text()
    for want in ("| val_loss | late40 | 2 |", "| minimal_pairs_acc | late40 | 2 |", "| mlm_loss | r15 | 2 |", "(baseline)", "paired diff to baseline",
                 "| r15 | 2 |"):
        assert want in md, md
    assert any(v in md for v in ("within noise", "better", "worse"))
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and 'src="loss_vs_tokens.png"' not in html
    for png in ("loss_vs_tokens.png", "loss_vs_flops.png", "metrics.png", "paired_diffs.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["metrics"]["late40"]["val_loss"]["n"] == 2
