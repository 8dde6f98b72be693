"""`masklab ensemble`: one detector from the scores of several saved ones (classifier bundles on
embeddings, TF-IDF bundles, fine-tuned models), served by `predict` like any model.

Every member scores the validation texts (log-odds, s float [N, M]). Two combiners:
- rank: each member's score -> its mid-rank in that member's validation scores (an empirical
  CDF stored as sorted reference scores), averaged over members; the score is logit(mean rank).
  Nothing is fitted to labels, so thresholds may be chosen on the same validation rows.
- stack: logistic regression on the members' standardised scores, fitted on validation only and
  cross-fitted (`folds` stratified folds): every validation row gets a score from a stack that
  never saw it, and the thresholds and calibration are chosen on those out-of-fold scores. The
  served stack is the mean of the fold stacks (one linear model: coefficients averaged).
`method="best"` keeps whichever of the two `select_by` prefers on validation; the table shows
each member alone beside them. The threshold for `target_fpr` is set on `threshold_texts`
(benign rows used for nothing else) when given, else on the validation benign rows.

Stored form (nothing pickled): ensemble.json {format, version, method, members: [{path, kind,
name, sha256 of its descriptor file}], rank: {refs}, stack: {mean, scale, coef, intercept},
operating_point, calibration, label_names, table}. Members are loaded from their paths and
refused when their descriptor (bundle.json / masklab_finetune.json) changed since.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.evaluation import operating as OP
from masklab.downstream.predict import DEFAULT_NAMES, Scorer, load_model
from masklab.downstream.run_files import atomic_dir, read_json, write_json
from masklab.errors import MaskLabError

FORMAT, VERSION = "masklab-ensemble", 1
METHODS = ("rank", "stack", "best")
MAX_REFS = 4096  # reference scores kept per member for the rank CDF (quantiles beyond that)


def _descriptor(path: Path) -> Path:
    for f in (path / "bundle.json", path / "masklab_finetune.json", path / "model" / "masklab_finetune.json"):
        if f.is_file():
            return f
    if (path / "ensemble.json").is_file():
        raise MaskLabError(f"{path} is an ensemble: members must be bundles or fine-tuned models")
    raise MaskLabError(f"{path} is neither a classifier bundle nor a fine-tuned model")


def _sha(path: Path) -> str:
    from masklab.data_prep.tokenizer import file_sha256

    return file_sha256(path)


def rank_scores(S: np.ndarray, refs: Sequence[np.ndarray]) -> np.ndarray:
    """S [N, M] member scores, refs[j] sorted float [R_j] -> logit of the mean mid-rank [N]."""
    u = np.zeros(len(S))
    for j, ref in enumerate(refs):
        lo, hi = np.searchsorted(ref, S[:, j], "left"), np.searchsorted(ref, S[:, j], "right")
        u += (lo + hi) / (2.0 * len(ref))
    u /= len(refs)
    eps = 0.5 / max(len(r) for r in refs)
    u = np.clip(u, eps, 1 - eps)
    return np.log(u) - np.log1p(-u)


def _fit_stack(Z: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(Z, y)


def crossfit_stack(S: np.ndarray, y: np.ndarray, folds: int = 2, seed: int = 0) -> tuple[dict, np.ndarray]:
    """-> (stack {mean, scale, coef, intercept, folds}, out-of-fold scores [N])."""
    from sklearn.model_selection import StratifiedKFold

    if folds < 2 or np.bincount(y, minlength=2).min() < folds:
        raise MaskLabError(f"a {folds}-fold cross-fitted stack needs >= {folds} validation rows of each class")
    mean, scale = S.mean(0), S.std(0)
    scale[scale == 0] = 1.0
    Z, oof, coefs, icpts = (S - mean) / scale, np.zeros(len(y)), [], []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(Z, y):
        lr = _fit_stack(Z[tr], y[tr], seed)
        oof[te] = lr.decision_function(Z[te])
        coefs.append(lr.coef_[0]), icpts.append(lr.intercept_[0])
    stack = {"mean": mean.tolist(), "scale": scale.tolist(), "coef": np.mean(coefs, 0).tolist(),
             "intercept": float(np.mean(icpts)), "folds": folds}
    return stack, oof


def stack_scores(S: np.ndarray, stack: dict) -> np.ndarray:
    Z = (S - np.asarray(stack["mean"])) / np.asarray(stack["scale"])
    return Z @ np.asarray(stack["coef"]) + stack["intercept"]


def _row(y: np.ndarray, s: np.ndarray, target_fpr: float) -> dict:
    m = M.binary_metrics(y, s)
    out = {k: M.summarize([m[k]]) for k in ("roc_auc", "pr_auc", "tpr_at_1pct_fpr")}
    if target_fpr:
        out["tpr_at_target_fpr_threshold"] = M.summarize([M.tpr_at_fpr(y, s, target_fpr)])
    return out


class EnsembleScorer(Scorer):
    kind = "ensemble"

    def __init__(self, info: dict, members: list[Scorer], path: Optional[Path] = None):
        self.info_json, self.members, self.path = info, members, path
        self.method, self.name = info["method"], f"ensemble_{info['method']}"
        self.calibration, self.operating_point = info.get("calibration"), info["operating_point"]
        self.label_names = {**DEFAULT_NAMES, **info.get("label_names", {})}
        self._refs = [np.asarray(r, dtype=np.float64) for r in (info.get("rank") or {}).get("refs", [])]

    def member_scores(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([m.scores(texts) for m in self.members], axis=1)

    def combine(self, S: np.ndarray) -> np.ndarray:
        return rank_scores(S, self._refs) if self.method == "rank" else stack_scores(S, self.info_json["stack"])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.combine(self.member_scores(texts))


def build_ensemble(member_paths: Sequence[str | Path], val_texts: Sequence[str], val_y: np.ndarray,
                   out: str | Path, method: str = "stack", select_by: str = "auc", target_fpr: float = 0.01,
                   threshold_texts: Optional[Sequence[str]] = None, threshold_source: str = "--threshold-data",
                   folds: int = 2, seed: int = 0, label_names: Optional[dict] = None,
                   val_name: str = "validation") -> tuple[EnsembleScorer, dict]:
    """Fit the combiner on validation, choose threshold and calibration, save `out` atomically.
    -> (the ensemble, {table: {row: metrics}, chosen, operating_point})."""
    from masklab.downstream.classifiers.calibration import fit_calibration
    from masklab.downstream.data.labelled import check_binary
    from masklab.downstream.evaluation.selection import select

    if method not in METHODS:
        raise MaskLabError(f"--method must be one of {', '.join(METHODS)}, not '{method}'")
    paths = [Path(p).resolve() for p in member_paths]
    if len(paths) < 2:
        raise MaskLabError("an ensemble needs at least 2 --models")
    descs = [_descriptor(p) for p in paths]
    y = check_binary(np.asarray(val_y), f"labels of {val_name}")
    members = [load_model(p) for p in paths]
    S = np.stack([m.scores(val_texts) for m in members], axis=1)  # [N, M]
    names = [f"{m.name} ({p.name})" for m, p in zip(members, paths)]
    table = {n: _row(y, S[:, j], target_fpr) for j, n in enumerate(names)}
    refs = [np.quantile(S[:, j], np.linspace(0, 1, MAX_REFS)) if len(y) > MAX_REFS else np.sort(S[:, j])
            for j in range(S.shape[1])]
    candidates = {}
    if method in ("rank", "best"):
        s = rank_scores(S, refs)
        candidates["ensemble_rank"] = ("rank", s, {"refs": [r.tolist() for r in refs]}, None)
        table["ensemble_rank"] = _row(y, s, target_fpr)
    if method in ("stack", "best"):
        stack, oof = crossfit_stack(S, y, folds, seed)
        candidates["ensemble_stack"] = ("stack", oof, None, stack)
        table["ensemble_stack (out-of-fold)"] = _row(y, oof, target_fpr)
    pick = select({k: table[k if k == "ensemble_rank" else "ensemble_stack (out-of-fold)"] for k in candidates},
                  select_by)
    kind, s_val, rank, stack = candidates[pick]
    info = {"format": FORMAT, "version": VERSION, "method": kind, "select_by": select_by, "validated_on": val_name,
            "members": [{"path": str(p), "name": m.name, "kind": m.kind, "descriptor": d.name if d.parent == p
                         else f"{d.parent.name}/{d.name}", "sha256": _sha(d)} for p, m, d in zip(paths, members, descs)],
            "rank": rank, "stack": stack, "label_names": {str(k): v for k, v in (label_names or {}).items()},
            "calibration": fit_calibration("platt", y, s_val), "operating_point": OP.default_point(),
            "table": table}
    ens = EnsembleScorer(info, members)
    if target_fpr and threshold_texts is not None:
        op = OP.choose(None, ens.scores(threshold_texts), target_fpr, threshold_source)
    elif target_fpr:
        op = OP.choose(y, s_val, target_fpr, f"validation ({val_name}" + (", out-of-fold stack scores)"
                                                                          if kind == "stack" else ")"))
    else:
        op = OP.default_point()
    info["operating_point"] = ens.operating_point = op
    with atomic_dir(out) as tmp:
        write_json(tmp / "ensemble.json", info)
    return ens, {"table": table, "chosen": pick, "operating_point": op}


def load_ensemble(path: str | Path) -> EnsembleScorer:
    """Load ensemble.json (fixed schema, plain JSON) and its members; refuses changed members."""
    p = Path(path)
    try:
        info = read_json(p / "ensemble.json")
    except ValueError as e:
        raise MaskLabError(f"{p}/ensemble.json is not valid JSON: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise MaskLabError(f"{p} is not a version-{VERSION} {FORMAT} (re-run `masklab ensemble`)")
    if info.get("method") not in ("rank", "stack") or not info.get(info["method"]):
        raise MaskLabError(f"{p}/ensemble.json: method {info.get('method')!r} without its parameters")
    members = []
    for m in info.get("members") or []:
        mp = Path(m["path"])
        d = mp / m["descriptor"]
        if not d.is_file():
            raise MaskLabError(f"{p}: member {mp} is missing (an ensemble refers to its members by path)")
        if _sha(d) != m["sha256"]:
            raise MaskLabError(f"{p}: member {mp} changed since the ensemble was fitted ({d.name} sha256 differs); "
                               "re-run `masklab ensemble`")
        members.append(load_model(mp))
    n = len(members)
    shapes = [len(info["stack"]["coef"])] if info["method"] == "stack" else [len(info["rank"]["refs"])]
    if n < 2 or shapes != [n]:
        raise MaskLabError(f"{p}/ensemble.json: {n} members but parameters for {shapes[0]}")
    return EnsembleScorer(info, members, p)
