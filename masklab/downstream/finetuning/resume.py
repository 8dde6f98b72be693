"""Where an interrupted `finetune` resumes from, and what it must match.

The engine checkpoints into `<out>.partial/checkpoint/` at every epoch end (`engine.fit`);
`<out>.partial/run.json` holds the run's fingerprint: the training settings, the source model's
weights file (path, size, mtime) and sha256 digests of the training and validation rows (after the
split and any augmentation). Rerunning the same command finds the checkpoint and continues from the
last finished epoch; a checkpoint of another fingerprint is refused in one line naming what changed,
never continued with other settings or data. The directory is removed once `out` is written.
One process at a time: `lock` holds a flock on `<out>.partial/.lock` (dropped by the kernel when
its holder dies, kill -9 included).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from masklab.errors import MaskLabError

# FinetuneConfig fields that do not change the trained weights (chosen after training, or where it runs)
NOT_TRAINING = ("threshold", "operating_point", "calibration", "target_fpr", "device")


def work_dir(out_dir) -> Path:
    out = Path(out_dir)
    return out.with_name(out.name + ".partial")


def _rows(d) -> str:
    h = hashlib.sha256()
    for t in d.texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    h.update(b"labels" + bytes(str(list(map(int, d.labels))), "ascii"))
    return h.hexdigest()[:16]


def fingerprint(model_path, cfg, train, val) -> dict:
    from masklab.downstream.encoders.load import detect_kind
    from masklab.downstream.encoders.source import weights_file

    w = Path(weights_file(model_path, "masklab" if detect_kind(model_path) == "masklab" else "hf"))
    st = w.stat()
    fp = {"settings": {k: v for k, v in asdict(cfg).items() if k not in NOT_TRAINING},
          "source model": {"weights": str(w.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)},
          "training data": _rows(train), "validation data": _rows(val)}
    return json.loads(json.dumps(fp, default=str))  # as it reads back from run.json


def claim(out_dir, model_path, cfg, train, val) -> Path:
    """-> the run's work directory, holding its fingerprint. An existing checkpoint of the same
    fingerprint is kept (resume); one of another fingerprint raises MaskLabError."""
    work = work_dir(out_dir)
    fp = fingerprint(model_path, cfg, train, val)
    saved = work / "run.json"
    if (work / "checkpoint" / "state.json").is_file() and saved.is_file():
        old = json.loads(saved.read_text())
        diff = [k for k in fp if old.get(k) != fp[k]]
        if diff:
            what = [f"{k} ({', '.join(n for n in fp[k] if old.get(k, {}).get(n) != fp[k][n])})"
                    if k == "settings" else k for k in diff]
            raise MaskLabError(f"{work} holds an interrupted finetune of another {', '.join(what)}; rerun the "
                               "original command to finish it, or remove that directory to start over")
        return work
    shutil.rmtree(work / "checkpoint", ignore_errors=True)  # no finished epoch there: nothing to resume
    work.mkdir(parents=True, exist_ok=True)
    from masklab.atomic import atomic_file

    atomic_file(saved, json.dumps(fp, indent=1, default=str))
    return work


# everything finetune writes into <out>.partial/: anything else there is someone else's
OURS = {"run.json", "checkpoint", ".lock"}


def lock(out_dir):
    """Hold `<out>.partial/.lock` while training and writing `out` (yields the work dir); a second
    process is refused in one line, and so is a `<out>.partial` holding files finetune did not write
    (a user's own folder of that name is never written into, nor removed by `release`)."""
    from masklab.downstream.finetuning.checkpoint import exclusive

    work = work_dir(out_dir)
    if work.exists():
        foreign = sorted(e.name for e in work.iterdir() if e.name not in OURS) if work.is_dir() else [work.name]
        if foreign:
            raise MaskLabError(f"{work} exists and holds files finetune did not write ({', '.join(foreign[:3])}"
                               f"{' ...' if len(foreign) > 3 else ''}); move it, or use another --out")
    return exclusive(work, "written by another masklab finetune process", label=out_dir)


def release(out_dir) -> None:
    """Remove what finetune wrote into `<out>.partial/` (the checkpoints only served resuming this
    run), then the directory itself if nothing else is left in it."""
    work = work_dir(out_dir)
    shutil.rmtree(work / "checkpoint", ignore_errors=True)
    for name in ("run.json", ".lock"):
        (work / name).unlink(missing_ok=True)
    try:
        work.rmdir()
    except OSError:  # not empty: leave it
        pass
