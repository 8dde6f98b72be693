"""`masklab embed | classify | predict | finetune | report`: argument parsing only; the work is in
downstream.pipeline / finetune / report."""
from __future__ import annotations

import argparse

from masklab.errors import MaskLabError



class FMT(argparse.ArgumentDefaultsHelpFormatter):
    """Each default printed once: help text that already states its default (or a None / False
    default, which says nothing) is left as written."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" in h.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return h
        return super()._get_help_string(action)


def _quiet(args) -> None:
    """Third-party progress chatter (datasets' "Generating train split", hub bars, transformers'
    load reports) off unless --verbose: the env vars for libraries imported later, the APIs for
    those already imported."""
    import os
    import sys

    if getattr(args, "verbose", False):
        return
    for k, v in (("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                 ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(k, v)
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()


def _verbose_arg(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: absent here keeps `masklab --verbose <stage>`'s value
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and third-party progress output (datasets, transformers)")


def _done(p: argparse.ArgumentParser, handler) -> None:
    """Every stage: its own --verbose, and third-party chatter off before the handler runs."""
    _verbose_arg(p)
    for a in p._actions:  # options without help text would show no default at all
        if a.help is None and a.option_strings and not any(a.default is v for v in (None, False, argparse.SUPPRESS)):
            a.help = "default: %(default)s"

    def run(args):
        _quiet(args)
        return handler(args)

    p.set_defaults(func=run)


def _threshold_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--threshold-data", default=None, metavar="FILE",
                   help="benign rows used only to set the --target-fpr threshold (your own traffic; labelled files "
                        f"keep their benign rows): {what}. Needs about 10/target rows (1%% FPR: ~1000); fewer "
                        "gives a warning")


def _threshold_texts(args):
    """The benign rows of --threshold-data (None without it); it needs a target FPR to aim at."""
    if not getattr(args, "threshold_data", None):
        return None
    if not args.target_fpr:
        raise MaskLabError("--threshold-data sets the threshold for --target-fpr: give a target above 0")
    from masklab.downstream.predict import read_threshold_texts

    return read_threshold_texts(args.threshold_data, args.text_column, args.label_column, args.positive_label)


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
    from masklab.downstream.data.labelled import load_labelled

    return load_labelled(args.data, args.text_column, args.label_column, args.positive_label, args.split)


def _no_overlap(args, *names: str) -> None:
    """--out must not equal, contain or lie inside any input (masklab.atomic.refuse_overlap)."""
    from masklab.atomic import refuse_overlap

    inputs = {}
    for n in names:
        v = getattr(args, n, None)
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            inputs[f"--{n.replace('_', '-')}" + (f"[{i}]" if isinstance(v, list) else "")] = x
    if args.out:
        refuse_overlap(args.out, inputs)


def _ints(spec: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise MaskLabError(f"expected comma-separated integers, got '{spec}'") from None


def _embed(args) -> int:
    from masklab.downstream.pipeline import embed

    _no_overlap(args, "model", "data")
    data = _load_data(args)
    embed(args.model, data, args.out, pooling=args.pooling, progress=not args.no_progress, kind=args.kind,
          max_length=args.max_length, normalize=None if args.normalize is None else args.normalize == "l2", long_mode=args.long, chunk_reduce=args.chunk_reduce,
          batch_size=args.batch_size, device=args.device, random_init=args.random_init, seed=args.seed)
    print(f"wrote {len(data)} embeddings to {args.out}")
    return 0


def _settings(args):
    from masklab.downstream.classifiers.models import Settings

    return Settings(C=args.C, class_weight=None if args.class_weight == "none" else args.class_weight,
                    scale=args.scale, normalize=args.normalize)


def _classify(args) -> int:
    from masklab.downstream.classifiers.models import parse_names
    from masklab.downstream.pipeline import print_table

    if not args.out or bool(args.embeddings) == bool(args.train):
        raise MaskLabError("classify needs --out DIR and either --embeddings DIR (cross-validation) or "
                           "--train X --test Y [Z ...] (train once, score each test set)")
    _no_overlap(args, "embeddings", "train", "val", "test", "threshold_data")
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import ThresholdData, selection_table

    names, save = parse_names(args.classifiers), None if args.save == "none" else args.save
    kw = {"text_column": args.text_column, "label_column": args.label_column, "positive_label": args.positive_label}
    if args.threshold_data and not args.target_fpr:
        raise MaskLabError("--threshold-data sets the threshold for --target-fpr: give a target above 0")
    thr_data = ThresholdData(args.threshold_data, kw) if args.threshold_data else None
    if args.embeddings:
        from masklab.downstream.pipeline import classify

        results = classify(args.embeddings, args.out, names, args.folds, _ints(args.seeds), args.grid,
                           args.target_tpr, args.bootstrap, save, _settings(args), args.target_fpr, thr_data,
                           args.select_by)
        print_table(results)
        chosen = next((n for n, r in results.items() if "operating_point" in r), None)
        if chosen:
            print(selection_table({n: r["summary"] for n, r in results.items()}, chosen, args.select_by))
            print(f"bundle {chosen}: {OP.describe(results[chosen]['operating_point'])}")
        print(f"results: {args.out}/results.json" + (f"; fitted bundle: {args.out}/bundle" if save else ""))
        return 0
    from masklab.downstream.evaluation.crosssource import evaluate, load_split

    if not args.test:
        raise MaskLabError("classify --train needs --test FILE_OR_DIR [...]")
    res = evaluate(load_split(args.train, kw), [load_split(t, kw) for t in args.test], args.out, names,
                   load_split(args.val, kw) if args.val else None, _settings(args), args.grid, args.target_tpr,
                   args.target_fpr, args.calibration, args.bootstrap, _ints(args.seeds)[0], save, args.group_column,
                   args.val_fraction, thr_data, args.select_by)
    cols = ("roc_auc", "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_fpr_threshold", "tpr_at_target_fpr_threshold",
            "fpr_at_target_tpr_threshold")
    print("validation:")
    print_table({n: {"summary": v} for n, v in res["validation"].items()}, cols)
    for d, r in res["tests"].items():
        print(f"test {d}:")
        print_table(r, cols)
    print("operating points (threshold for --target-fpr):")
    for n, op in res["operating_points"].items():
        print(f"  {n}: {OP.describe(op)}" + ("  [WEAK: fewer than 10 benign rows beyond it]" if op["warning"] else ""))
    if res["chosen"]:
        print(selection_table(res["validation"], res["chosen"], args.select_by))
    print(f"runs: {', '.join(f'{args.out}/{d}' for d in res['tests'])}"
          + (f"; bundle ({res['chosen']}, chosen on validation): {args.out}/bundle" if res["chosen"] else ""))
    return 0


def _predict(args) -> int:
    from masklab.downstream.predict import predict, read_texts

    _no_overlap(args, "model", "data", "threshold_data")
    texts, labels, ids = read_texts(args.data, args.text, args.text_column, args.label_column, args.positive_label,
                                    args.id_column)
    thr = _threshold_texts(args)
    r = predict(args.model, texts, labels, args.out, ids, args.format, thr, args.target_fpr,
                f"--threshold-data {args.threshold_data}")
    if r["metrics"]:
        print("metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()))
    return 0


def _finetune(args) -> int:
    from masklab.downstream.finetuning.run import finetune, finetune_cv
    from masklab.downstream.finetuning.model import FinetuneConfig

    cfg = FinetuneConfig(pooling=args.pooling, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         warmup_ratio=args.warmup, patience=args.patience, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, max_length=args.max_length, max_steps=args.max_steps,
                         seed=args.seed, device=args.device, long=args.long, chunk_stride=args.chunk_stride,
                         augment=args.augment_carriers, augment_copies=args.augment_copies,
                         augment_plain=args.augment_plain, target_fpr=args.target_fpr)
    _no_overlap(args, "model", "data", "val_data", "test_data", "augment_carriers", "threshold_data")
    data = _load_data(args)
    if args.cv:
        from masklab.downstream.run_files import atomic_dir, write_run
        from masklab.downstream.pipeline import print_table

        res = finetune_cv(args.model, data, folds=args.cv, seeds=(args.seed,), cfg=cfg)
        with atomic_dir(args.out) as tmp:
            write_run(tmp, "finetune_cv", data.source, {"kind": "finetune", "path": args.model, "pooling": args.pooling},
                      res, data.labels, data.to_records())
        print_table(res)
        return 0
    kw = {"text_column": args.text_column, "label_column": args.label_column, "positive_label": args.positive_label}
    from masklab.downstream.data.labelled import load_labelled

    val = load_labelled(args.val_data, **kw) if args.val_data else None
    tests = [load_labelled(t, **kw) for t in args.test_data or []]
    thr = _threshold_texts(args)
    r = finetune(args.model, data, args.out, cfg, val, tests, args.group_column, thr,
                 f"--threshold-data {args.threshold_data}")
    from masklab.downstream.evaluation import operating as OP

    for name, m in r["tests"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    print(f"fine-tuned model: {r['model_dir']} ({OP.describe(r['operating_point'])}, on log-odds)")
    return 0


def _ensemble(args) -> int:
    from masklab.downstream.data.labelled import load_labelled
    from masklab.downstream.ensemble import build_ensemble
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import selection_table
    from masklab.downstream.pipeline import print_table

    _no_overlap(args, "models", "val", "test", "threshold_data")
    kw = {"text_column": args.text_column, "label_column": args.label_column, "positive_label": args.positive_label}
    val = load_labelled(args.val, **kw)
    tests = [load_labelled(t, **kw) for t in args.test or []]
    thr = _threshold_texts(args)
    ens, res = build_ensemble(args.models, val.texts, val.labels, args.out, args.method, args.select_by,
                              args.target_fpr, thr, f"--threshold-data {args.threshold_data}", args.folds, args.seed,
                              val.label_names, val.source)
    chosen = res["chosen"] if res["chosen"] in res["table"] else f"{res['chosen']} (out-of-fold)"
    print(selection_table(res["table"], chosen, args.select_by))
    print(f"ensemble ({ens.method}): {OP.describe(res['operating_point'])}")
    for t in tests:
        s = ens.scores(t.texts)
        m = M.binary_metrics(t.labels, s, ens.operating_point["threshold"])
        r = M.rates_at_threshold(t.labels, s, ens.operating_point["threshold"])
        m["fpr_at_target_fpr_threshold"], m["tpr_at_target_fpr_threshold"] = r["fpr"], r["tpr"]
        print(f"test {t.source}:")
        print_table({ens.name: {"summary": {k: M.summarize([v]) for k, v in m.items()}}},
                    ("roc_auc", "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_fpr_threshold", "tpr_at_target_fpr_threshold"))
    print(f"ensemble: {args.out} (serve it with `masklab predict --model {args.out}`)")
    return 0


def _carry(args) -> int:
    from masklab.downstream.data.carriers import CarrierSpec, carried
    from masklab.downstream.run_files import atomic_file

    lo, hi = _ints(args.context_chars) if "," in args.context_chars else (None, None)
    if lo is None:
        raise MaskLabError(f"--context-chars takes MIN,MAX (got '{args.context_chars}')")
    _no_overlap(args, "data", "carriers")
    data = _load_data(args)
    spec = CarrierSpec(args.carriers, args.copies, (lo, hi), args.plain, args.seed)
    plain_cols = dict(kv.split("=", 1) for kv in args.plain_column or [])
    out = carried(data, spec, args.keep_original, stream=args.stream, plain_columns=plain_cols)
    from masklab.downstream.run_files import dumps

    names = out.label_names
    atomic_file(args.out, "".join(dumps({**r, "label": names.get(r["label"], r["label"])}, ensure_ascii=False)
                                  + "\n" for r in out.to_records()))
    print(f"wrote {len(out)} rows ({int(out.labels.sum())} {names.get(1, 'positive')}) to {args.out}")
    return 0


def _report(args) -> int:
    from masklab.downstream.evaluation.report import write_report

    _no_overlap(args, "runs")
    names = [n.strip() for n in args.classifiers.split(",") if n.strip()] if args.classifiers else None
    path = write_report(args.runs, args.out, latency=args.latency, k_errors=args.errors, title=args.title,
                        classifiers=names)
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
    p.add_argument("--pooling", choices=["cls", "mean", "max"], default=None,
                   help="default: a sentence-transformers dir's own pooling, else mean")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per sequence incl. specials (default: sentence-transformers max_seq_length, else model max)")
    p.add_argument("--normalize", choices=["l2", "none"], default=None,
                   help="L2-normalise each embedding (default: l2 if the sentence-transformers dir has Normalize)")
    p.add_argument("--long", choices=["truncate", "chunk"], default="truncate", help="what to do with longer inputs")
    p.add_argument("--chunk-reduce", choices=["mean", "max"], default="mean", help="how chunk embeddings are combined")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--random-init", action="store_true", help="same architecture, freshly initialised weights (baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True)
    _done(p, _embed)

    p = sub.add_parser("classify", formatter_class=FMT, help="cross-validate classifiers, or train/val/test them",
                       description="--embeddings DIR: stratified k-fold CV, mean ± sd, results.json + a bundle. "
                                   "--train X [--val V] --test A B ...: fit once on X, choose the classifier, "
                                   "thresholds and calibration on V (or a hold-out of X), score each test set "
                                   "(one run dir each) and save one bundle. X/V/A: embeddings dirs, or data files "
                                   "for --classifiers tfidf.")
    p.add_argument("--embeddings", help="embeddings dir from `masklab embed` (cross-validation)")
    p.add_argument("--train", help="training embeddings dir (or data file, tfidf only)")
    p.add_argument("--val", help="validation split; default: --val-fraction of --train, grouped by --group-column")
    p.add_argument("--test", nargs="+", help="test sets scored with the model chosen on validation")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--group-column", default=None,
                   help="rows sharing this column's value stay on one side of every split made from --train")
    p.add_argument("--text-column", default="text", help="for data files given to --train/--val/--test")
    p.add_argument("--label-column", default="label")
    p.add_argument("--positive-label", default=None)
    p.add_argument("--classifiers", default="lr,svm_linear,svm_rbf,rf,gnb,xgb",
                   help="comma list of lr,svm_linear,svm_rbf,rf,gnb,xgb,tfidf, or 'all' (no tfidf)")
    p.add_argument("--C", type=float, default=None, help="inverse regularisation for lr/svm_*/tfidf (default per model)")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    p.add_argument("--scale", choices=["none", "standard"], default="none", help="StandardScaler before lr/svm/gnb")
    p.add_argument("--normalize", choices=["l2", "none"], default="l2", help="L2-normalise embedding rows first")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated CV seeds (train/val/test: the first)")
    p.add_argument("--grid", action="store_true", help="small grid, inner 3-fold CV on training data only (grouped "
                                                       "by --group-column when given)")
    p.add_argument("--target-tpr", type=float, default=0.95, help="TPR a validation threshold is chosen for")
    p.add_argument("--target-fpr", type=float, default=0.01,
                   help="FPR the bundle's operating threshold is chosen for on validation (0: threshold 0)")
    p.add_argument("--calibration", choices=["platt", "isotonic", "none"], default="platt",
                   help="probabilities fitted on validation scores (train/val/test mode)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    p.add_argument("--save", default="best", help="classifier to save as the bundle: a name, 'best' or 'none'")
    p.add_argument("--select-by", choices=["auc", "tpr_at_fpr"], default="auc",
                   help="what 'best' means on validation (CV: the fold mean): ROC-AUC, or the TPR at the --target-fpr "
                        "threshold; the table it chose from is printed")
    _threshold_args(p, "an embeddings dir or a data file (embedded with the training encoder)")
    p.add_argument("--out", help="run directory to write")
    _done(p, _classify)

    p = sub.add_parser("predict", formatter_class=FMT, help="score text with a bundle, a fine-tuned model or an ensemble",
                       description="One row per text, the same for bundles, fine-tuned models and ensembles: id, "
                                   "score (log-odds), probability (calibrated), label (0/1), label_name, threshold, "
                                   "threshold_target_fpr, threshold_set, text. Labelled --data also prints metrics.")
    p.add_argument("--model", required=True, help="a classify bundle dir, an ensemble dir, or a finetune output (dir or its model/)")
    p.add_argument("--data", help="a .txt file (one prompt per line) or a csv/jsonl/parquet file")
    p.add_argument("--text", action="append", help="a prompt to score (repeatable)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--positive-label", default=None)
    p.add_argument("--id-column", default="id", help="column copied into each row's id (absent: the row number)")
    p.add_argument("--out", default=None, help="write the rows to this .jsonl or .csv file instead of stdout")
    p.add_argument("--format", choices=["jsonl", "csv"], default=None, help="default: from --out's suffix, else jsonl")
    _threshold_args(p, "re-sets the model's threshold at serving time (the saved model is not rewritten) and "
                       "prints what it set")
    p.add_argument("--target-fpr", type=float, default=0.01, help="FPR the --threshold-data threshold is set for")
    _done(p, _predict)

    p = sub.add_parser("finetune", formatter_class=FMT, help="fine-tune an encoder with a classification head",
                       description="Full fine-tuning (AdamW, warmup, early stopping on a validation split), with a "
                                   "progress bar (step, ETA; log lines when stderr is not a terminal). Pooling and "
                                   "max length default to what `embed` uses for the same model. Writes out/model "
                                   "(HF-loadable) and a run dir for `report`; --cv K runs k-fold CV instead. "
                                   "On 2 CPU cores MiniLM-L6 took 4.7-6 min per epoch of 1,400 rows at the previous "
                                   "cls / 512-token defaults (a user report).")
    p.add_argument("--model", required=True, help="HF BERT dir or MaskLab checkpoint (exported via pretrain.export_hf)")
    _add_data_args(p)
    p.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="default: as `embed` -- a sentence-transformers dir's own pooling (mean for all-MiniLM-L6-v2), "
                        "else mean")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training rows (early stopping may end sooner)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup fraction of the steps")
    p.add_argument("--patience", type=int, default=2, help="epochs without val-loss improvement before stopping")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2, help="0: no hold-out test (e.g. with --test-data)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per input incl. specials (default: as `embed` -- the sentence-transformers "
                        "max_seq_length, 256 for all-MiniLM-L6-v2, else the model's maximum)")
    p.add_argument("--val-data", default=None, help="validation file for early stopping (default: --val-fraction hold-out)")
    p.add_argument("--test-data", nargs="+", default=None,
                   help="test files, each scored into out/test_<name>/ (default: a --test-fraction hold-out)")
    p.add_argument("--group-column", default=None, help="hold-outs keep rows sharing this column's value together")
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps (0: none)")
    p.add_argument("--long", choices=["truncate", "chunk"], default="truncate",
                   help="score inputs longer than --max-length by their first window, or by the max over windows")
    p.add_argument("--chunk-stride", type=int, default=None, help="overlap of --long chunk windows in tokens "
                                                                  "(default: a quarter of --max-length)")
    p.add_argument("--augment-carriers", default=None, metavar="SOURCE",
                   help="add copies of every train/val row placed inside benign documents of SOURCE: pydoc, "
                        "handbook:LANG (debian-handbook, e.g. handbook:en-US) or a .txt file/dir (see `masklab carry`)")
    p.add_argument("--augment-copies", type=int, default=1, help="carried copies per row")
    p.add_argument("--augment-plain", type=float, default=0.5, help="plain benign documents added, x the row count")
    p.add_argument("--target-fpr", type=float, default=0.01,
                   help="the saved operating threshold is chosen on validation (or --threshold-data) for this FPR "
                        "(0: threshold 0)")
    _threshold_args(p, "a data file; the threshold is stored in the model")
    p.add_argument("--cv", type=int, default=0, help="run K-fold CV of fine-tuning instead of one split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True)
    _done(p, _finetune)

    p = sub.add_parser("ensemble", formatter_class=FMT, help="combine saved detectors (bundles, fine-tuned models)",
                       description="Scores --val with every --models member, then combines them: 'rank' (mean of "
                                   "each member's validation rank) or 'stack' (logistic regression on the member "
                                   "scores, cross-fitted on --val so thresholds are chosen on scores it was not fitted "
                                   "to); 'best' keeps the one --select-by prefers. Writes out/ensemble.json (plain "
                                   "JSON; members by path), served by `masklab predict --model OUT`.")
    p.add_argument("--models", nargs="+", required=True, help="bundle dirs and/or finetune outputs (2 or more)")
    p.add_argument("--val", required=True, help="labelled validation file the combiner and threshold are fitted on")
    p.add_argument("--test", nargs="+", default=None, help="labelled test files, scored once and reported")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--positive-label", default=None)
    p.add_argument("--method", choices=["rank", "stack", "best"], default="best", help="how members are combined")
    p.add_argument("--select-by", choices=["auc", "tpr_at_fpr"], default="auc",
                   help="how --method best chooses on validation (the stack by its out-of-fold scores)")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds of the stack")
    p.add_argument("--target-fpr", type=float, default=0.01, help="FPR the saved threshold is chosen for (0: 0)")
    _threshold_args(p, "a data file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _done(p, _ensemble)

    p = sub.add_parser("carry", formatter_class=FMT, help="place labelled prompts inside benign documents",
                       description="Writes a labelled .jsonl: every row of --data inside --copies documents built from "
                                   "--carriers paragraphs (label kept), plus --plain x N carrier-only benign documents. "
                                   "For testing a detector on indirect (document-carried) injections, or augmenting "
                                   "training data before `embed`.")
    _add_data_args(p)
    p.add_argument("--carriers", default="pydoc", help="pydoc, handbook:LANG (debian-handbook) or a .txt file/dir")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--context-chars", default="200,1200", help="MIN,MAX characters of carrier text per document")
    p.add_argument("--plain", type=float, default=0.5, help="carrier-only benign documents, x the row count")
    p.add_argument("--plain-column", action="append", metavar="KEY=VALUE",
                   help="column value for the plain documents, e.g. lang=de (repeatable)")
    p.add_argument("--keep-original", action="store_true", help="also write the rows themselves")
    p.add_argument("--stream", type=int, default=0, help="independent draw stream (e.g. 1 for a second file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".jsonl file to write")
    _done(p, _carry)

    p = sub.add_parser("report", formatter_class=FMT, help="markdown report + plots for runs side by side",
                       description="Metrics table, ROC / PR / confusion plots, per-language breakdown, misclassified "
                                   "examples (and latency with --latency) for classify/finetune run dirs.")
    p.add_argument("--runs", nargs="+", required=True, help="run directories from classify / finetune")
    p.add_argument("--out", required=True)
    p.add_argument("--latency", action="store_true", help="time text -> score for runs with a saved bundle")
    p.add_argument("--errors", type=int, default=10, help="misclassified examples shown per run")
    p.add_argument("--title", default="Detection report")
    p.add_argument("--classifiers", default=None, help="comma list: only these classifiers' rows and curves")
    _done(p, _report)

    from masklab.downstream.glue.cli import register as register_glue  # glue, minimal-pairs

    register_glue(sub)
