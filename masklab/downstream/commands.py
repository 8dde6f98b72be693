"""The handlers of `masklab embed | classify | predict | finetune | ensemble | carry | report`
(handler(args) -> exit code); heavy imports stay inside them."""
from __future__ import annotations

from masklab.downstream.cli_args import classifier_settings, load_data, no_overlap, parse_ints, threshold_texts
from masklab.errors import MaskLabError


def run_embed(args) -> int:
    from masklab.downstream.pipeline import embed

    no_overlap(args, "model", "data")
    data = load_data(args)
    embed(args.model, data, args.out, pooling=args.pooling, progress=not args.no_progress, kind=args.kind,
          max_length=args.max_length, normalize=None if args.normalize is None else args.normalize == "l2", long_mode=args.long, chunk_reduce=args.chunk_reduce,
          batch_size=args.batch_size, device=args.device, random_init=args.random_init, seed=args.seed)
    print(f"wrote {len(data)} embeddings to {args.out}")
    return 0



def run_classify(args) -> int:
    from masklab.downstream.classifiers.models import parse_names
    from masklab.downstream.pipeline import print_table

    if not args.out or bool(args.embeddings) == bool(args.train):
        raise MaskLabError("classify needs --out DIR and either --embeddings DIR (cross-validation) or "
                           "--train X --test Y [Z ...] (train once, score each test set)")
    no_overlap(args, "embeddings", "train", "val", "test", "threshold_data")
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import ThresholdData, selection_table

    names, save = parse_names(args.classifiers), None if args.save == "none" else args.save
    kw = {"text_column": args.text_column, "label_column": args.label_column, "positive_label": args.positive_label}
    if args.threshold_data and not args.target_fpr:
        raise MaskLabError("--threshold-data sets the threshold for --target-fpr: give a target above 0")
    thr_data = ThresholdData(args.threshold_data, kw) if args.threshold_data else None
    if args.embeddings:
        from masklab.downstream.pipeline import classify

        results = classify(args.embeddings, args.out, names, args.folds, parse_ints(args.seeds), args.grid,
                           args.target_tpr, args.bootstrap, save, classifier_settings(args), args.target_fpr, thr_data,
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
                   load_split(args.val, kw) if args.val else None, classifier_settings(args), args.grid, args.target_tpr,
                   args.target_fpr, args.calibration, args.bootstrap, parse_ints(args.seeds)[0], save, args.group_column,
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


def run_predict(args) -> int:
    from masklab.downstream.predict import predict, read_texts

    no_overlap(args, "model", "data", "threshold_data")
    texts, labels, ids = read_texts(args.data, args.text, args.text_column, args.label_column, args.positive_label,
                                    args.id_column)
    thr = threshold_texts(args)
    r = predict(args.model, texts, labels, args.out, ids, args.format, thr, args.target_fpr,
                f"--threshold-data {args.threshold_data}")
    if r["metrics"]:
        print("metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()))
    return 0


def run_finetune(args) -> int:
    from masklab.downstream.finetuning.run import finetune, finetune_cv
    from masklab.downstream.finetuning.model import FinetuneConfig

    cfg = FinetuneConfig(pooling=args.pooling, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         warmup_ratio=args.warmup, patience=args.patience, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, max_length=args.max_length, max_steps=args.max_steps,
                         seed=args.seed, device=args.device, long=args.long, chunk_stride=args.chunk_stride,
                         augment=args.augment_carriers, augment_copies=args.augment_copies,
                         augment_plain=args.augment_plain, target_fpr=args.target_fpr)
    no_overlap(args, "model", "data", "val_data", "test_data", "augment_carriers", "threshold_data")
    data = load_data(args)
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
    thr = threshold_texts(args)
    r = finetune(args.model, data, args.out, cfg, val, tests, args.group_column, thr,
                 f"--threshold-data {args.threshold_data}")
    from masklab.downstream.evaluation import operating as OP

    for name, m in r["tests"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    print(f"fine-tuned model: {r['model_dir']} ({OP.describe(r['operating_point'])}, on log-odds)")
    return 0


def run_ensemble(args) -> int:
    from masklab.downstream.data.labelled import load_labelled
    from masklab.downstream.ensemble import build_ensemble
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import selection_table
    from masklab.downstream.pipeline import print_table

    no_overlap(args, "models", "val", "test", "threshold_data")
    kw = {"text_column": args.text_column, "label_column": args.label_column, "positive_label": args.positive_label}
    val = load_labelled(args.val, **kw)
    tests = [load_labelled(t, **kw) for t in args.test or []]
    thr = threshold_texts(args)
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


def run_carry(args) -> int:
    from masklab.downstream.data.carriers import CarrierSpec, carried
    from masklab.downstream.run_files import atomic_file

    lo, hi = parse_ints(args.context_chars) if "," in args.context_chars else (None, None)
    if lo is None:
        raise MaskLabError(f"--context-chars takes MIN,MAX (got '{args.context_chars}')")
    no_overlap(args, "data", "carriers")
    data = load_data(args)
    spec = CarrierSpec(args.carriers, args.copies, (lo, hi), args.plain, args.seed)
    plain_cols = dict(kv.split("=", 1) for kv in args.plain_column or [])
    out = carried(data, spec, args.keep_original, stream=args.stream, plain_columns=plain_cols)
    from masklab.downstream.run_files import dumps

    names = out.label_names
    atomic_file(args.out, "".join(dumps({**r, "label": names.get(r["label"], r["label"])}, ensure_ascii=False)
                                  + "\n" for r in out.to_records()))
    print(f"wrote {len(out)} rows ({int(out.labels.sum())} {names.get(1, 'positive')}) to {args.out}")
    return 0


def run_report(args) -> int:
    from masklab.downstream.evaluation.report import write_report

    no_overlap(args, "runs")
    names = [n.strip() for n in args.classifiers.split(",") if n.strip()] if args.classifiers else None
    path = write_report(args.runs, args.out, latency=args.latency, k_errors=args.errors, title=args.title,
                        classifiers=names)
    print(f"report: {path}")
    return 0
