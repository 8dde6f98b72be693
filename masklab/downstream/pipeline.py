"""The stages behind `masklab embed / classify` and the smoke pipeline's detection step.

Embeddings directory: embeddings.npy float32 [N, D], labels.npy int64 [N], texts.jsonl
(N rows: text, label, other columns), meta.json (encoder spec, source, label names).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.run_files import atomic_dir, dumps, read_json, write_json, write_run
from masklab.downstream.classifiers.bundle import save_bundle
from masklab.downstream.classifiers.models import Settings, cross_validate, fit
from masklab.downstream.data.labelled import LabelledData, check_binary, load_bastion
from masklab.downstream.encoders.load import load_encoder
from masklab.errors import DataError, MaskLabError

log = logging.getLogger("masklab.downstream")


def embed(model_path: str, data: LabelledData, out: str | Path, pooling: Optional[str] = None, progress: bool = True,
          **encoder_kw) -> Path:
    """Embed every row of `data` and write an embeddings directory (atomically)."""
    enc = load_encoder(model_path, pooling=pooling, **encoder_kw)
    X = enc.encode(data.texts, progress=progress)  # raises on NaN before anything is written
    with atomic_dir(out) as tmp:
        np.save(tmp / "embeddings.npy", X)
        np.save(tmp / "labels.npy", data.labels)
        with open(tmp / "texts.jsonl", "w", encoding="utf-8") as f:
            for r in data.to_records():
                f.write(dumps(r, ensure_ascii=False, default=str) + "\n")
        write_json(tmp / "meta.json", {"encoder": enc.spec(), "source": data.source, "n": len(data),
                                       "dim": int(X.shape[1]), "label_names": data.label_names})
    log.info("wrote %d x %d embeddings to %s", X.shape[0], X.shape[1], out)
    return Path(out)


def load_embeddings(d: str | Path) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """-> (X float32 [N, D], y int64 [N], records, meta); checks shapes and finiteness."""
    d = Path(d)
    for f in ("embeddings.npy", "labels.npy", "meta.json"):
        if not (d / f).is_file():
            raise DataError(f"{d} is not an embeddings directory (missing {f}; write one with `masklab embed`)")
    X, y = np.load(d / "embeddings.npy"), np.load(d / "labels.npy")
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"{d}: embeddings {X.shape} and labels {y.shape} do not line up")
    if not np.isfinite(X).all():
        raise DataError(f"{d}: embeddings contain NaN/inf in {int((~np.isfinite(X).all(1)).sum())} rows")
    recs_f = d / "texts.jsonl"
    records = [json.loads(x) for x in recs_f.read_text(encoding="utf-8").splitlines()] if recs_f.is_file() else \
        [{"text": "", "label": int(v)} for v in y]
    return X, y, records, read_json(d / "meta.json")


def classify(emb_dir: str | Path, out: str | Path, names: Sequence[str], folds: int = 5, seeds: Sequence[int] = (0,),
             grid: bool = False, target_tpr: float = 0.95, n_boot: int = 1000, save: Optional[str] = "best",
             settings: Settings = Settings(), target_fpr: float = 0.0, threshold_data=None,
             select_by: str = "auc") -> dict:
    """Stratified k-fold CV of every classifier on one embeddings dir (`tfidf` runs on its
    texts.jsonl); write a run directory with results.json and a bundle of `save` (a name,
    'best' by mean CV `select_by` (auc | tpr_at_fpr), or None) fitted on all rows. Its threshold:
    0, or set for `target_fpr` on `threshold_data` (selection.ThresholdData) when given. For
    train/val/test evaluation see evaluation.crosssource."""
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import select
    X, y, records, meta = load_embeddings(emb_dir)
    y = check_binary(y, f"labels in {emb_dir}")
    texts = np.asarray([str(r.get("text", "")) for r in records], dtype=object)
    feats = {n: texts if n == "tfidf" else X for n in names}
    results = {}
    for n in names:
        results.update(cross_validate(feats[n], y, [n], folds, seeds, grid, target_tpr, n_boot, settings=settings,
                                      target_fpr=target_fpr))
    with atomic_dir(out) as tmp:
        write_run(tmp, "classify", meta.get("source"), meta.get("encoder", {}), results, y, records,
                  embeddings=str(emb_dir), settings=vars(settings), label_names=meta.get("label_names"))
        if save:
            best = select({n: r["summary"] for n, r in results.items()}, select_by) if save == "best" else save
            if best not in names:
                raise MaskLabError(f"--save {best}: not among the classifiers run ({', '.join(names)})")
            clf = fit(best, feats[best], y, seeds[0], grid, settings)  # final model on all training data
            enc = {"kind": "text"} if best == "tfidf" else meta.get("encoder", {})
            op = OP.default_point()
            if threshold_data is not None and target_fpr:
                from masklab.downstream.classifiers.models import scores

                op = OP.choose(None, scores(clf, threshold_data.features(best, meta.get("encoder", {}))), target_fpr,
                               threshold_data.name)
            save_bundle(tmp / "bundle", clf, best, enc, op["threshold"], meta.get("label_names"),
                        {"trained_on": str(emb_dir), "n_train": int(len(y)), "settings": vars(settings),
                         "operating_point": op, "select_by": select_by})
            results[best]["operating_point"] = op
    return results


def print_table(results: dict, metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1", "roc_auc",
                                                           "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_tpr_threshold")) -> str:
    """Plain-text table: one row per classifier, mean ± sd per metric (the mean alone for one value)."""
    widths = [max(22, len(m) + 2) for m in metrics]  # the long threshold-column names stay apart
    head = f"{'classifier':<14}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, widths))
    lines = [head]
    for name, r in results.items():
        cells = []
        for m in metrics:
            s = r["summary"].get(m)
            cells.append("-" if not s else f"{s['mean']:.3f}" if s.get("n", 2) == 1 else f"{s['mean']:.3f} ± {s['sd']:.3f}")
        lines.append(f"{name:<14}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    text = "\n".join(lines)
    print(text)
    return text


def detect_smoke(model_path: str, out_dir: str, folds: int = 5, seed: int = 0) -> dict:
    """Smoke detection score: every bastioncorpus row ({canary} filled), mean-pooled
    embeddings of `model_path`, standardised, stratified `folds`-fold logistic regression.
    Writes out_dir/embeddings + out_dir/lr (a run dir); -> {accuracy|f1|roc_auc: {mean, sd}}."""
    out = Path(out_dir)
    data = load_bastion()
    embed(model_path, data, out / "embeddings", pooling="mean", progress=False)
    # a 300-step 4x256 encoder's mean-pooled features are not sentence embeddings: their scales differ
    # per dimension, and the sentence-embedding defaults (L2 rows, no scaler, C=1) underfit to the
    # majority class (ROC-AUC 0.58 vs 0.82 standardised, measured on the smoke checkpoint)
    res = classify(out / "embeddings", out / "lr", ["lr"], folds=folds, seeds=(seed,), n_boot=200,
                   settings=Settings(scale="standard", normalize="none"))["lr"]
    scores = {k: {"mean": res["summary"][k]["mean"], "sd": res["summary"][k]["sd"]} for k in ("accuracy", "f1", "roc_auc")}
    print(f"detection ({len(data)} bastioncorpus rows, {folds}-fold LR on mean-pooled embeddings): " +
          ", ".join(f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in scores.items()))
    write_json(out / "detect_smoke.json", scores)
    return scores
