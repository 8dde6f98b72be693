"""`masklab embed | classify | finetune | report`: argument parsing only; the work is in
downstream.pipeline / finetune / report."""
from __future__ import annotations

import argparse
import json

from masklab.errors import MaskLabError

FMT = argparse.ArgumentDefaultsHelpFormatter


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labelled data")
    g.add_argument("--data", default="bastion",
                   help="'bastion' (bastioncorpus, {canary} filled), a .csv/.tsv/.jsonl/.json/.parquet file, or a hub name")
    g.add_argument("--text-column", default="text")
    g.add_argument("--label-column", default="label")
    g.add_argument("--positive-label", default=None,
                   help="label value meaning malicious/positive (default: guessed from names like 'malicious', or 1)")
    g.add_argument("--split", default="train", help="split to load for hub datasets")


def _load_data(args):
    from masklab.downstream.data import load_labelled

    return load_labelled(args.data, args.text_column, args.label_column, args.positive_label, args.split)


def _ints(spec: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise MaskLabError(f"expected comma-separated integers, got '{spec}'") from None


def _embed(args) -> int:
    from masklab.downstream.pipeline import embed

    data = _load_data(args)
    embed(args.model, data, args.out, pooling=args.pooling, progress=not args.no_progress, kind=args.kind,
          max_length=args.max_length, long_mode=args.long, chunk_reduce=args.chunk_reduce,
          batch_size=args.batch_size, device=args.device, random_init=args.random_init, seed=args.seed)
    print(f"wrote {len(data)} embeddings to {args.out}")
    return 0


def _classify(args) -> int:
    if args.predict:
        return _predict(args)
    if not args.embeddings or not args.out:
        raise MaskLabError("classify needs --embeddings DIR and --out DIR (or --predict --model-bundle DIR)")
    from masklab.downstream.classifiers import parse_names
    from masklab.downstream.pipeline import classify, print_table

    names = parse_names(args.classifiers)
    save = None if args.save == "none" else args.save
    results = classify(args.embeddings, args.out, names, args.folds, _ints(args.seeds), args.grid, args.target_tpr,
                       args.bootstrap, save, args.test_embeddings)
    print_table(results)
    print(f"results: {args.out}/results.json" + (f"; fitted bundle: {args.out}/bundle" if save else ""))
    return 0


def _predict(args) -> int:
    if not args.model_bundle:
        raise MaskLabError("--predict needs --model-bundle DIR")
    texts = list(args.text or [])
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise MaskLabError("--predict needs --text TEXT (repeatable) or --input FILE (one prompt per line)")
    from masklab.downstream.classifiers import load_bundle

    b = load_bundle(args.model_bundle)
    out = b.predict(texts)
    names = b.info.get("label_names") or {"0": "benign", "1": "malicious"}
    for t, s, y in zip(texts, out["score"], out["label"]):
        print(json.dumps({"label": names.get(str(int(y)), int(y)), "score": round(float(s), 4), "text": t[:80]},
                         ensure_ascii=False))
    return 0


def _finetune(args) -> int:
    from masklab.downstream.finetune import FinetuneConfig, finetune, finetune_cv

    cfg = FinetuneConfig(pooling=args.pooling, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         warmup_ratio=args.warmup, patience=args.patience, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, max_length=args.max_length, max_steps=args.max_steps,
                         seed=args.seed, device=args.device)
    data = _load_data(args)
    if args.cv:
        from masklab.downstream._io import atomic_dir, write_run
        from masklab.downstream.pipeline import print_table

        res = finetune_cv(args.model, data, folds=args.cv, seeds=(args.seed,), cfg=cfg)
        with atomic_dir(args.out) as tmp:
            write_run(tmp, "finetune_cv", data.source, {"kind": "finetune", "path": args.model, "pooling": args.pooling},
                      res, data.labels, data.to_records())
        print_table(res)
        return 0
    r = finetune(args.model, data, args.out, cfg)
    print("test: " + ", ".join(f"{k} {v:.3f}" for k, v in r["test"].items()))
    print(f"fine-tuned model: {r['model_dir']}")
    return 0


def _report(args) -> int:
    from masklab.downstream.report import write_report

    path = write_report(args.runs, args.out, latency=args.latency, k_errors=args.errors, title=args.title)
    print(f"report: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", formatter_class=FMT, help="embed a labelled dataset with a checkpoint or HF encoder",
                       description="Embed every row of a labelled dataset; writes embeddings.npy [N, D], labels.npy, "
                                   "texts.jsonl and meta.json into --out (atomically).")
    p.add_argument("--model", required=True, help="MaskLab checkpoint or run dir, or a Hugging Face encoder dir")
    p.add_argument("--kind", choices=["masklab", "hf", "masklab-import"], default=None,
                   help="override detection; masklab-import runs an HF BERT dir through our model")
    _add_data_args(p)
    p.add_argument("--pooling", choices=["cls", "mean", "max"], default="mean")
    p.add_argument("--max-length", type=int, default=None, help="tokens per sequence incl. specials (default: model max)")
    p.add_argument("--long", choices=["truncate", "chunk"], default="truncate", help="what to do with longer inputs")
    p.add_argument("--chunk-reduce", choices=["mean", "max"], default="mean", help="how chunk embeddings are combined")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--random-init", action="store_true", help="same architecture, freshly initialised weights (baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_embed)

    p = sub.add_parser("classify", formatter_class=FMT, help="cross-validate classifiers on embeddings, or predict",
                       description="Stratified k-fold CV of classifiers on an embeddings dir; prints mean ± sd and "
                                   "writes results.json + a fitted bundle. With --predict: score raw text end to end.")
    p.add_argument("--embeddings", help="embeddings dir from `masklab embed`")
    p.add_argument("--classifiers", default="lr,svm_linear,svm_rbf,rf,gnb,xgb", help="comma list, or 'all'")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated CV seeds")
    p.add_argument("--grid", action="store_true", help="small hyper-parameter grid, inner 3-fold CV per training fold")
    p.add_argument("--target-tpr", type=float, default=0.95, help="TPR the validation threshold is chosen for")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    p.add_argument("--save", default="best", help="classifier to fit on all data and save: a name, 'best' or 'none'")
    p.add_argument("--test-embeddings", default=None, help="cross-source: train on --embeddings, test on these")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--predict", action="store_true", help="predict raw text with a saved bundle")
    p.add_argument("--model-bundle", help="bundle dir (a classify run's bundle/)")
    p.add_argument("--text", action="append", help="a prompt to score (repeatable)")
    p.add_argument("--input", help="file with one prompt per line")
    p.set_defaults(func=_classify)

    p = sub.add_parser("finetune", formatter_class=FMT, help="fine-tune an encoder with a classification head",
                       description="Full fine-tuning (AdamW, warmup, early stopping on a validation split). Writes "
                                   "out/model (HF-loadable) and a run dir for `report`; --cv K runs k-fold CV instead.")
    p.add_argument("--model", required=True, help="HF BERT dir or MaskLab checkpoint (exported via pretrain.export_hf)")
    _add_data_args(p)
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup fraction of the steps")
    p.add_argument("--patience", type=int, default=2, help="epochs without val-loss improvement before stopping")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps (0: none)")
    p.add_argument("--cv", type=int, default=0, help="run K-fold CV of fine-tuning instead of one split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_finetune)

    p = sub.add_parser("report", formatter_class=FMT, help="markdown report + plots for runs side by side",
                       description="Metrics table, ROC / PR / confusion plots, per-language breakdown, misclassified "
                                   "examples (and latency with --latency) for classify/finetune run dirs.")
    p.add_argument("--runs", nargs="+", required=True, help="run directories from classify / finetune")
    p.add_argument("--out", required=True)
    p.add_argument("--latency", action="store_true", help="time text -> score for runs with a saved bundle")
    p.add_argument("--errors", type=int, default=10, help="misclassified examples shown per run")
    p.add_argument("--title", default="Detection report")
    p.set_defaults(func=_report)
