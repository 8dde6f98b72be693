"""`masklab predict`: score raw text with a classifier bundle or a fine-tuned model directory.

Both kinds give the same row format: {text, score (log-odds of malicious), label (at the
model's own threshold), probability (calibrated bundles only)}. With labels in the input,
the ranking and threshold metrics are reported too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.errors import DataError, MaskLabError


class FinetunedScorer:
    """A `finetune` output directory (out/model) behind the bundle's predict interface."""

    def __init__(self, path: Path):
        from masklab.downstream.finetuning.model import load_finetuned

        self.model, self.tok, self.cfg = load_finetuned(path)
        self.info = {"classifier": f"finetune_{self.cfg.pooling}", "threshold": float(self.cfg.threshold),
                     "label_names": {"0": "benign", "1": "malicious"}}

    def predict(self, texts: Sequence[str]) -> dict:
        from masklab.downstream.finetuning.training import predict_logodds

        s = predict_logodds(self.model, self.tok, list(texts), self.cfg)
        return {"score": s, "label": (s >= self.cfg.threshold).astype(np.int64)}


def load_model(path: str | Path):
    """A bundle dir (bundle.json), a finetune model dir (masklab_finetune.json) or a finetune
    run dir (its model/ subdirectory)."""
    p = Path(path)
    if (p / "bundle.json").is_file():
        from masklab.downstream.classifiers.bundle import load_bundle

        return load_bundle(p)
    for d in (p, p / "model"):
        if (d / "masklab_finetune.json").is_file():
            return FinetunedScorer(d)
    raise MaskLabError(f"{p} is neither a classifier bundle (bundle.json) nor a fine-tuned model "
                       "(masklab_finetune.json, from `masklab finetune`)")


def read_texts(data: Optional[str], texts: Sequence[str], text_column: str = "text",
               label_column: str = "label", positive_label: Optional[str] = None) -> tuple[list[str], Optional[np.ndarray]]:
    """--text values plus the rows of --data: a .txt file (one prompt per line) or a labelled
    file (its text column; labels are used for metrics when the label column exists)."""
    out, labels = list(texts or []), None
    if data:
        p = Path(data)
        if p.suffix.lower() == ".txt":
            if not p.is_file():
                raise DataError(f"data file not found: {p}")
            out += [line.rstrip("\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            from masklab.downstream.data.labelled import map_labels, read_local

            rows = read_local(p)
            if not rows or text_column not in rows[0]:
                found = ", ".join(rows[0]) if rows else "none"
                raise DataError(f"{p}: no column '{text_column}'; columns found: {found} (choose with --text-column)")
            out += [str(r[text_column]) for r in rows]
            if label_column in rows[0] and not texts:
                labels, _ = map_labels([r[label_column] for r in rows], positive_label, True, str(p))
    if not out:
        raise MaskLabError("predict needs --text TEXT (repeatable) or --data FILE")
    return out, labels


def predict(model_path: str | Path, texts: Sequence[str], labels: Optional[np.ndarray] = None,
            out: Optional[str | Path] = None) -> dict:
    """Score `texts`; write one JSON row per text to `out` (or stdout). -> {rows, metrics}."""
    from masklab.downstream.evaluation import metrics as M

    model = load_model(model_path)
    pred = model.predict(texts)
    bad = ~np.isfinite(np.asarray(pred["score"], dtype=np.float64))
    if bad.any():  # a NaN score would label the text benign, and bare NaN is not JSON
        raise MaskLabError(f"{model_path}: {int(bad.sum())} of {len(bad)} scores are NaN/infinite (first: text "
                           f"{int(np.argmax(bad))}); the encoder or the bundle is damaged")
    names = model.info.get("label_names") or {"0": "benign", "1": "malicious"}
    rows = []
    for i, t in enumerate(texts):
        r = {"label": names.get(str(int(pred["label"][i])), int(pred["label"][i])),
             "score": round(float(pred["score"][i]), 4)}
        if "probability" in pred:
            r["probability"] = round(float(pred["probability"][i]), 4)
        rows.append({**r, "text": t})
    from masklab.downstream.run_files import dumps

    lines = "".join(dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if out:
        from masklab.downstream.run_files import atomic_file

        atomic_file(out, lines)
    else:
        print(lines, end="")
    metrics = None
    if labels is not None:
        metrics = M.binary_metrics(labels, pred["score"], threshold=float(model.info.get("threshold", 0.0)))
        metrics.update({f"{k}_at_threshold": v for k, v in
                        M.rates_at_threshold(labels, pred["score"], model.info.get("threshold", 0.0)).items()})
    return {"rows": rows, "metrics": metrics}
