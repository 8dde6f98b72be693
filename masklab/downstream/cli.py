"""`masklab embed | classify | predict | finetune | ensemble | carry | report` (and `glue`,
`minimal-pairs`): argument parsing only; the work is in downstream.commands and the modules it calls."""
from __future__ import annotations

from masklab.downstream.cli_args import FMT, add_data_args, set_handler, threshold_args
from masklab.downstream.commands import (run_carry, run_classify, run_embed, run_ensemble, run_finetune, run_predict,
                                         run_report)


def register(sub) -> None:
    p = sub.add_parser("embed", formatter_class=FMT, help="embed a labelled dataset with a checkpoint or HF encoder",
                       description="Embed every row of a labelled dataset; writes embeddings.npy [N, D], labels.npy, "
                                   "texts.jsonl and meta.json into --out (atomically).")
    p.add_argument("--model", required=True, help="MaskLab checkpoint or run dir, or a Hugging Face encoder dir")
    p.add_argument("--kind", choices=["masklab", "hf", "masklab-import"], default=None,
                   help="override detection; masklab-import runs an HF BERT dir through our model")
    add_data_args(p)
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
    set_handler(p, run_embed)

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
    threshold_args(p, "an embeddings dir or a data file (embedded with the training encoder)")
    p.add_argument("--out", help="run directory to write")
    set_handler(p, run_classify)

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
    threshold_args(p, "re-sets the model's threshold at serving time (the saved model is not rewritten) and "
                       "prints what it set")
    p.add_argument("--target-fpr", type=float, default=0.01, help="FPR the --threshold-data threshold is set for")
    set_handler(p, run_predict)

    p = sub.add_parser("finetune", formatter_class=FMT, help="fine-tune an encoder with a classification head",
                       description="Full fine-tuning on the engine `masklab glue` uses (unpadded encoder, length-"
                                   "grouped batches; AdamW, warmup then linear decay, early stopping on validation "
                                   "loss, the best epoch kept), with a progress bar (step, ETA; log lines when "
                                   "stderr is not a terminal). Pooling and max length default to what `embed` uses "
                                   "for the same model (mean, 256 tokens for all-MiniLM-L6-v2). A checkpoint is "
                                   "written to OUT.partial/ at every epoch end: after an interruption, the same "
                                   "command continues from the last finished epoch (other settings or data are "
                                   "refused). Writes out/model (served by `masklab predict`) and a run dir for "
                                   "`report`; --cv K runs k-fold CV instead. Time: see the README (Detection).")
    p.add_argument("--model", required=True, help="HF BERT / ModernBERT dir or MaskLab checkpoint / run dir")
    add_data_args(p)
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
    threshold_args(p, "a data file; the threshold is stored in the model")
    p.add_argument("--cv", type=int, default=0, help="run K-fold CV of fine-tuning instead of one split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True)
    set_handler(p, run_finetune)

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
    threshold_args(p, "a data file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    set_handler(p, run_ensemble)

    p = sub.add_parser("carry", formatter_class=FMT, help="place labelled prompts inside benign documents",
                       description="Writes a labelled .jsonl: every row of --data inside --copies documents built from "
                                   "--carriers paragraphs (label kept), plus --plain x N carrier-only benign documents. "
                                   "For testing a detector on indirect (document-carried) injections, or augmenting "
                                   "training data before `embed`.")
    add_data_args(p)
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
    set_handler(p, run_carry)

    p = sub.add_parser("report", formatter_class=FMT, help="markdown report + plots for runs side by side",
                       description="Metrics table, ROC / PR / confusion plots, per-language breakdown, misclassified "
                                   "examples (and latency with --latency) for classify/finetune run dirs.")
    p.add_argument("--runs", nargs="+", required=True, help="run directories from classify / finetune")
    p.add_argument("--out", required=True)
    p.add_argument("--latency", action="store_true", help="time text -> score for runs with a saved bundle")
    p.add_argument("--errors", type=int, default=10, help="misclassified examples shown per run")
    p.add_argument("--title", default="Detection report")
    p.add_argument("--classifiers", default=None, help="comma list: only these classifiers' rows and curves")
    set_handler(p, run_report)

    from masklab.downstream.glue.cli import register as register_glue  # glue, minimal-pairs

    register_glue(sub)
