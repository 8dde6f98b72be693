"""Full fine-tuning of an encoder with a 2-way classification head: split the data, train, score
the test sets, save atomically; and k-fold cross-validation of the same.

The model and its stored form: `model.py`; training on the shared engine and scoring: `training.py`.
Resume: the run's checkpoints live in `<out>.partial/` until `out` is written; rerunning the same
command continues from the last finished epoch, and one of other settings, source or data is
refused (`resume.py`).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.finetuning.model import (FinetuneConfig, build, check_config, resolve_max_length, save,
                                                 source_defaults)
from masklab.downstream.finetuning.training import predict_logodds, train
from masklab.downstream.run_files import atomic_dir, write_json, write_run
from masklab.errors import MaskLabError


def _sets(data, cfg: FinetuneConfig, val_data, test_data: Sequence, groups) -> tuple:
    """-> (train_idx, val set, [(name, test set)]) where sets are LabelledData."""
    from masklab.downstream.data.labelled import check_binary
    from masklab.downstream.data.splits import split_indices

    y = check_binary(data.labels)
    rest, tests = np.arange(len(y)), [(f"test_{Path(t.source).stem}", t) for t in test_data]
    if not test_data and cfg.test_fraction > 0:
        rest, held = split_indices(y, cfg.test_fraction, cfg.seed, groups)
        tests = [("test", data.subset(held))]
    if val_data is None:
        keep, held = split_indices(y[rest], cfg.val_fraction, cfg.seed + 1, None if groups is None else groups[rest])
        val, train_idx = data.subset(rest[held]), rest[keep]
    else:
        val, train_idx = val_data, rest
    if len(np.unique(y[train_idx])) < 2:
        raise MaskLabError(f"finetune: {len(y)} rows leave {len(train_idx)} for training after the validation/test "
                           "hold-outs (need both classes): use more data, or give --val-data / --test-data")
    for name, t in tests:
        check_binary(t.labels, f"labels of the {name} set")
    return train_idx, val, tests


def _augment(train, val, cfg: FinetuneConfig) -> tuple:
    """Carrier augmentation after the split: train and validation rows get their carried copies
    in separate streams, so no document mixes rows across the split."""
    if not cfg.augment:
        return train, val
    from masklab.downstream.data.carriers import CarrierSpec, carried, carrier_paragraphs

    spec = CarrierSpec(cfg.augment, cfg.augment_copies, plain=cfg.augment_plain, seed=cfg.seed)
    paras = carrier_paragraphs(cfg.augment)
    return carried(train, spec, True, 0, paras), carried(val, spec, True, 1, paras)


def _test_result(t, s: np.ndarray, threshold: float, seed: int, op: Optional[dict] = None) -> tuple[dict, dict]:
    m = M.binary_metrics(t.labels, s, threshold)
    r = M.rates_at_threshold(t.labels, s, threshold)
    m["fpr_at_target_fpr_threshold"], m["tpr_at_target_fpr_threshold"] = r["fpr"], r["tpr"]
    return m, {"summary": {k: M.summarize([v]) for k, v in m.items()},
               "ci": M.bootstrap_ci(t.labels, s, threshold, n=500, seed=seed),
               "oof": {"seed": seed, "score": s}, "confusion": M.confusion(t.labels, (s >= threshold).astype(int)),
               "thresholds": {"target_fpr": threshold, "operating_point": op}}


def _operating_point(model, tok, cfg: FinetuneConfig, val, threshold_texts, threshold_source: str) -> FinetuneConfig:
    """cfg with the calibration (Platt on validation scores), the threshold for cfg.target_fpr (on
    `threshold_texts`, benign rows kept for it, else on validation's benign rows) and its evidence."""
    from masklab.downstream.classifiers.calibration import fit_calibration
    from masklab.downstream.evaluation import operating as OP

    s_val = predict_logodds(model, tok, val.texts, cfg) if len(val) else np.zeros(0)
    cal = fit_calibration("platt", val.labels, s_val) if len(np.unique(val.labels)) == 2 else None
    if not cfg.target_fpr:
        op = OP.default_point()
    elif threshold_texts is not None:
        op = OP.choose(None, predict_logodds(model, tok, list(threshold_texts), cfg), cfg.target_fpr, threshold_source)
    elif len(val) and (val.labels == 0).any():
        op = OP.choose(val.labels, s_val, cfg.target_fpr, OP.on_validation(val.source))
    else:
        op = OP.default_point()
    return replace(cfg, threshold=op["threshold"], operating_point=op, calibration=cal)


def finetune(model_path: str | Path, data, out_dir: str | Path, cfg: FinetuneConfig = FinetuneConfig(),
             val_data=None, test_data: Sequence = (), group_column: Optional[str] = None,
             threshold_texts: Optional[Sequence[str]] = None, threshold_source: str = "--threshold-data") -> dict:
    """Fine-tune on `data` (LabelledData), early-stopping on `val_data` or a stratified hold-out
    (grouped by `group_column`), score every `test_data` set (or a `test_fraction` hold-out; none
    with 0). Saves atomically: out_dir/model (model.py's layout, served by `predict`), out_dir/finetune.json
    (config, history, sizes) and one run directory per test set (out_dir itself for the hold-out).
    The threshold for cfg.target_fpr is set on `threshold_texts` (benign rows used for nothing
    else) when given, else on the validation benign rows, and stored with its evidence.
    -> {history, tests: {name: metrics}, model_dir, threshold, operating_point}."""

    from masklab.downstream.data.splits import group_values
    from masklab.downstream.finetuning.resume import claim, lock, release

    check_config(cfg)
    groups = group_values(data.columns, group_column, data.source)
    train_idx, val, tests = _sets(data, cfg, val_data, test_data, groups)
    train_set, val = _augment(data.subset(train_idx), val, cfg)
    cfg = source_defaults(model_path, cfg)
    model, tok, mcfg = build(model_path, cfg.pooling, cfg.seed)
    cfg = resolve_max_length(mcfg, cfg)
    with lock(out_dir):
        work = claim(out_dir, model_path, cfg, train_set, val)
        history = train(model, tok, train_set.texts, train_set.labels, val.texts, val.labels, cfg, work)
        with atomic_dir(out_dir) as tmp:
            cfg = _operating_point(model, tok, cfg, val, threshold_texts, threshold_source)
            name, summary = f"finetune_{cfg.pooling}", {}
            for tname, t in tests:
                s = predict_logodds(model, tok, t.texts, cfg)
                summary[tname], results = _test_result(t, s, cfg.threshold, cfg.seed, cfg.operating_point)
                write_run(tmp if tname == "test" else tmp / tname, "finetune", f"{data.source} -> {t.source}",
                          {"kind": "finetune", "path": str(model_path), "pooling": cfg.pooling}, {name: results},
                          t.labels, t.to_records(), config=asdict(cfg), history=history,
                          label_names=data.label_names)
            save(model, tok, mcfg, tmp / "model", cfg)
            write_json(tmp / "finetune.json", {"config": asdict(cfg), "history": history, "tests": summary,
                                               "sizes": {"train": len(train_set), "val": len(val),
                                                         **{n: len(t) for n, t in tests}}, "group_column": group_column})
    release(out_dir)
    return {"history": history, "tests": summary, "model_dir": str(Path(out_dir) / "model"),
            "threshold": cfg.threshold, "operating_point": cfg.operating_point}


class _Finetuned:
    """Adapter so classifiers.cross_validate can score a fine-tuned model like any classifier."""

    def __init__(self, model, tok, cfg):
        self.model, self.tok, self.cfg = model, tok, cfg

    def decision_function(self, texts):
        return predict_logodds(self.model, self.tok, list(texts), self.cfg)


def finetune_cv(model_path: str | Path, data, folds: int = 5, seeds: Sequence[int] = (0,),
                cfg: FinetuneConfig = FinetuneConfig(), n_boot: int = 1000) -> dict:
    """Stratified k-fold CV of full fine-tuning (validation split carved from each training fold);
    same result format as classifiers.cross_validate, under the name 'finetune_<pooling>'."""
    from masklab.downstream.classifiers.models import cross_validate

    cfg = source_defaults(model_path, cfg)

    def fit_fn(_name, texts, y, seed):
        from masklab.downstream.data.splits import split_indices

        c = replace(cfg, seed=seed)
        tr, va = split_indices(y, c.val_fraction, seed)
        model, tok, mcfg = build(model_path, c.pooling, seed)
        c = resolve_max_length(mcfg, c)
        with tempfile.TemporaryDirectory() as work:  # no resume across CV folds: checkpoints are scratch
            train(model, tok, [texts[i] for i in tr], y[tr], [texts[i] for i in va], y[va], c, Path(work))
        return _Finetuned(model, tok, c)

    return cross_validate(list(data.texts), data.labels, [f"finetune_{cfg.pooling}"], folds=folds, seeds=seeds,
                          n_boot=n_boot, fit_fn=fit_fn)
