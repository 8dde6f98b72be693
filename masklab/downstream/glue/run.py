"""`masklab glue`: fine-tune and evaluate one model on GLUE tasks x seeds (the cells).

Layout of `--out`:
  <out>/<task>/seed_<s>/results.json  one cell: dev metrics, task score, per-epoch history, wall time
  <out>/<task>/seed_<s>/work/         the cell's fine-tuning checkpoint while it runs (resume after a kill)
  <out>/mnli/seed_<s>/model.safetensors  kept for --mnli-start (RTE, MRPC, STS-B start from it)
  <out>/results.json, results.md, results.png  the summary (report.py)
A cell whose results.json exists with the same fingerprint (model, task, seed, hyper-parameters,
data) is skipped, so a rerun (or a Slurm requeue) does only what is missing; one written with
other settings is refused rather than mixed into the table.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from masklab.downstream.glue.tasks import TASKS, Task
from masklab.errors import MaskLabError

log = logging.getLogger("masklab.glue")


@dataclass
class Job:
    model: str
    out: str
    tasks: list
    data: str = "hub"  # 'hub' or a directory in the official GLUE layout
    recipe: Optional[str] = None
    overrides: list = field(default_factory=list)
    seeds: Optional[list] = None  # None: the recipe's
    max_train: int = 0  # > 0: subsample each training set to this many rows (the table says so)
    max_eval: int = 0
    max_steps: int = 0
    device: str = "cpu"
    progress: bool = True
    custom: Optional[dict] = None  # {name, train, dev, text_columns, label_column, metric}
    baseline: Optional[str] = None  # another run's <out>/results.json: differences in the table


def cell_dir(out, task: str, seed: int) -> Path:
    return Path(out) / task / f"seed_{seed}"


def _task(job: Job, name: str) -> Task:
    if job.custom and name == job.custom["name"]:
        from masklab.downstream.glue.data import custom_task

        c = job.custom
        return custom_task(c["name"], c["text_columns"], c["label_column"], c["metric"], None)
    return TASKS[name]


def load_splits(job: Job, name: str):
    """-> (task, train Split, {dev name: Split}), subsampled as the job says."""
    from masklab.downstream.glue.data import load_custom, load_task

    if job.custom and name == job.custom["name"]:
        task, train, dev = load_custom(_task(job, name), Path(job.custom["train"]), Path(job.custom["dev"]))
    else:
        task = TASKS[name]
        train, dev = load_task(name, job.data)
    if job.max_train:
        train = train.subsample(job.max_train, 0)
    if job.max_eval:
        dev = {k: v.subsample(job.max_eval, 1) for k, v in dev.items()}
    return task, train, dev


def settings_for(job: Job, recipe, name: str, seed: int):
    from masklab.downstream.finetuning.engine import Settings

    t = recipe.custom if job.custom and name == job.custom["name"] else recipe.tasks[name]
    return Settings(lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, warmup_ratio=recipe.warmup_ratio,
                    weight_decay=t.weight_decay, max_length=recipe.max_length, seed=int(seed), max_steps=job.max_steps,
                    progress=job.progress, device=job.device, betas=tuple(recipe.betas), eps=recipe.eps)


def fingerprint(job: Job, name: str, settings, mnli_start: bool) -> str:
    from masklab.downstream.encoders.source import weights_file
    from masklab.downstream.encoders.load import detect_kind

    w = weights_file(job.model, "masklab" if detect_kind(job.model) == "masklab" else "hf")
    st = Path(w).stat()
    key = {"model": str(Path(w).resolve()), "model_size": st.st_size, "model_mtime": int(st.st_mtime), "task": name,
           "settings": {k: v for k, v in asdict(settings).items() if k not in ("progress", "device")},
           "data": job.data if not job.custom else job.custom, "max_train": job.max_train, "max_eval": job.max_eval,
           "mnli_start": mnli_start}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished(path: Path, fp: str) -> Optional[dict]:
    """The cell's results when complete and of the same fingerprint; refuses other settings."""
    p = path / "results.json"
    if not p.is_file():
        return None
    res = json.loads(p.read_text())
    if res.get("fingerprint") != fp:
        raise MaskLabError(f"{p} holds a result of other settings (model, hyper-parameters or data differ); "
                           "use another --out, or remove that directory to recompute it")
    return res


def run_cell(job: Job, recipe, recipe_file: str, name: str, seed: int, cache: dict) -> dict:
    """Fine-tune + evaluate one (task, seed); resumes from the cell's checkpoint; skips a done cell."""
    s = settings_for(job, recipe, name, seed)
    mnli_start = bool(recipe.mnli_start and name in ("rte", "mrpc", "stsb") and not job.custom)
    fp = fingerprint(job, name, s, mnli_start)
    d = cell_dir(job.out, name, seed)
    done = finished(d, fp)
    if done is not None:
        log.info("%s seed %d: done earlier (%s), skipped", name, seed, d / "results.json")
        return done
    with _cell_lock(d):
        done = finished(d, fp)  # another process may have finished it while we checked
        if done is not None:
            return done
        return _train_cell(job, task_name=name, seed=seed, s=s, fp=fp, d=d, mnli_start=mnli_start,
                           recipe_file=recipe_file, cache=cache)


def _cell_lock(d: Path):
    """One process per cell (two `masklab glue` into one --out, a resubmitted array)."""
    from masklab.downstream.finetuning.checkpoint import exclusive

    return exclusive(d, "computed by another masklab glue process")


def _train_cell(job: Job, task_name: str, seed: int, s, fp: str, d: Path, mnli_start: bool, recipe_file: str,
                cache: dict) -> dict:
    from masklab.downstream.finetuning.batches import encode
    from masklab.downstream.finetuning.engine import fit, predict
    from masklab.downstream.finetuning.heads import from_pretrained
    from masklab.downstream.glue.metrics import score
    from masklab.downstream.run_files import atomic_file

    name = task_name
    t0 = time.time()
    if name not in cache:
        task, train, dev = load_splits(job, name)
        cache.clear()  # one task's data in memory at a time
        cache[name] = (task, train, dev, {})
    task, train, dev, enc = cache[name]
    model, tok, _ = from_pretrained(job.model, task.num_labels, seed=seed)
    if s.max_length not in enc:
        enc[s.max_length] = (encode(tok, train.texts_a, train.texts_b, train.labels, s.max_length),
                             {k: encode(tok, v.texts_a, v.texts_b, v.labels, s.max_length) for k, v in dev.items()})
    tr, dv = enc[s.max_length]
    if mnli_start:
        _load_mnli(job, model, seed)

    def evaluate() -> dict:
        out = {}
        for k, v in dv.items():
            out[k] = score(task.metrics, v.labels, predict(model, v, device=s.device).numpy())
        return {"dev": out, "score": float(sum(m["score"] for m in out.values()) / len(out))}

    state = fit(model, tr, s, d / "work", evaluate, desc=f"{name} seed {seed}")
    final = state["history"][-1]
    res = {"task": name, "seed": seed, "fingerprint": fp, "model": str(job.model), "recipe": recipe_file,
           "settings": {k: v for k, v in asdict(s).items() if k not in ("progress",)}, "mnli_start": mnli_start,
           "metrics": task.metrics, "dev": final["dev"], "score": final["score"], "history": state["history"],
           "data": {"train": train.source, "dev": {k: v.source for k, v in dev.items()}, "train_rows": len(train),
                    "dev_rows": {k: len(v) for k, v in dev.items()}},
           "steps": state["step"], "wall_s": time.time() - t0}
    if name == "mnli":  # what --mnli-start needs: everything but the 3-way classifier
        from safetensors.torch import save_file

        tmp = d / ".model.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.encoder_state().items()}, str(tmp))
        tmp.replace(d / "model.safetensors")
    atomic_file(d / "results.json", json.dumps(res, indent=1))
    shutil.rmtree(d / "work", ignore_errors=True)  # the checkpoint only served resuming this cell
    log.info("%s seed %d: score %.2f (%s) in %.0fs", name, seed, res["score"],
             ", ".join(f"{k} {m['score']:.2f}" for k, m in res["dev"].items()), res["wall_s"])
    return res


def _load_mnli(job: Job, model, seed: int) -> None:
    from safetensors.torch import load_file

    p = cell_dir(job.out, "mnli", seed) / "model.safetensors"
    if not p.is_file():
        raise MaskLabError(f"--mnli-start: {p} not found; run mnli with seed {seed} into the same --out first "
                           "(--tasks mnli,rte,... runs it first)")
    missing, unexpected = model.load_state_dict(load_file(str(p)), strict=False)
    if unexpected or [k for k in missing if not k.startswith("classifier.")]:
        raise MaskLabError(f"{p} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def run(job: Job) -> dict:
    """Every (task, seed) cell in order, then the summary (results.json / .md / .png in --out)."""
    from masklab.downstream.glue.recipe import load_recipe
    from masklab.downstream.glue.report import write_summary

    recipe, recipe_file = load_recipe(job.recipe, job.overrides)
    seeds = job.seeds or list(recipe.seeds)
    cache: dict = {}
    cells = []
    for name in job.tasks:
        for seed in seeds:
            cells.append(run_cell(job, recipe, recipe_file, name, seed, cache))
    return write_summary(job.out, cells, job.tasks, seeds, job.baseline)
