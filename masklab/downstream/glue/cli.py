"""`masklab glue MODEL` and `masklab minimal-pairs MODEL`: argument parsing only (imports stay
lazy: `masklab --help` must not import torch)."""
from __future__ import annotations

import argparse

from masklab.errors import MaskLabError

FMT = argparse.ArgumentDefaultsHelpFormatter


def _glue(args) -> int:
    from masklab.downstream.glue.run import Job
    from masklab.downstream.glue.tasks import parse_tasks

    custom = None
    if args.custom:
        if not (args.custom_train and args.custom_dev and args.text_columns and args.label_column):
            raise MaskLabError("--custom NAME needs --custom-train FILE --custom-dev FILE --text-columns a[,b] "
                               "--label-column y (and --metric)")
        custom = {"name": args.custom, "train": args.custom_train, "dev": args.custom_dev,
                  "text_columns": [c.strip() for c in args.text_columns.split(",") if c.strip()],
                  "label_column": args.label_column, "metric": args.metric}
        from masklab.downstream.glue.data import custom_task

        custom_task(args.custom, custom["text_columns"], args.label_column, args.metric, None)  # fails early
        tasks = [args.custom] + (parse_tasks(args.tasks) if args.tasks else [])
    else:
        tasks = parse_tasks(args.tasks or "all")
    if args.data != "hub" and not custom:
        from pathlib import Path

        if not Path(args.data).is_dir():
            raise MaskLabError(f"--data {args.data}: not a directory (give 'hub' or a GLUE directory with "
                               "<Task>/train.tsv and dev.tsv)")
    for flag in ("max_train", "max_eval", "max_steps"):
        if getattr(args, flag) < 0:
            raise MaskLabError(f"--{flag.replace('_', '-')} must be >= 0")
    _check_disjoint(args)
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise MaskLabError(f"--seeds takes comma-separated integers, not {args.seeds!r}") from None
    overrides = list(args.set or [])
    if args.mnli_start:
        overrides.append("mnli_start=true")
    job = Job(model=args.model, out=args.out, tasks=tasks, data=args.data, recipe=args.recipe, overrides=overrides,
              seeds=seeds, max_train=args.max_train, max_eval=args.max_eval, max_steps=args.max_steps,
              device=args.device, progress=not args.no_progress, custom=custom, baseline=args.baseline)
    from masklab.downstream.encoders.load import detect_kind

    detect_kind(args.model)  # a wrong MODEL path fails before any data is read
    if args.baseline:
        from masklab.downstream.glue.report import load_baseline

        load_baseline(args.baseline)
    if args.executor == "slurm":
        from masklab.downstream.glue.slurm import submit

        return submit(job, args)
    from masklab.downstream.glue.run import run

    s = run(job)
    print(s["markdown"], end="")
    print(f"results: {args.out}/results.json, {args.out}/results.md, {args.out}/results.png")
    return 0


def _check_disjoint(args) -> None:
    """--out must not be, contain or lie inside an input (the model, the data): refuse before writing."""
    from pathlib import Path

    out = Path(args.out).resolve()
    inputs = [("MODEL", args.model)] + ([("--data", args.data)] if args.data != "hub" else [])
    inputs += [(f, getattr(args, a)) for f, a in (("--custom-train", "custom_train"), ("--custom-dev", "custom_dev"))
               if getattr(args, a)]
    for flag, p in inputs:
        q = Path(p).resolve()
        if out == q or q in out.parents or out in q.parents:
            raise MaskLabError(f"--out {args.out} overlaps the input {flag} {p}: choose an output directory outside it")


def _minimal_pairs(args) -> int:
    from masklab.downstream.glue.minimal_pairs import run_minimal_pairs

    res = run_minimal_pairs(args.model, args.data, args.out, limit=args.limit, progress=not args.no_progress)
    print(res["markdown"], end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("glue", formatter_class=FMT, help="fine-tune and evaluate a model on GLUE tasks",
                       description="Fine-tune MODEL (a MaskLab checkpoint / run dir, or an HF BERT / ModernBERT dir) on "
                                   "GLUE tasks x seeds with the recipe in configs/glue/, and write results.json per "
                                   "task and seed, results.md / results.png in --out. Reruns skip finished cells; "
                                   "a killed cell resumes from its last checkpoint.")
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default=None, help="all | small (cola,sst2,mrpc,stsb,rte) | comma list")
    p.add_argument("--data", default="hub", help="'hub' (nyu-mll/glue via datasets) or a directory in the official "
                                                 "GLUE layout (<dir>/CoLA/train.tsv, dev.tsv, ...)")
    p.add_argument("--recipe", default=None, help="recipe YAML (default configs/glue/default.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override, e.g. tasks.rte.lr=2e-5")
    p.add_argument("--seeds", default=None, help="comma list (default: the recipe's 3 seeds)")
    p.add_argument("--mnli-start", action="store_true", help="RTE, MRPC, STS-B start from this run's MNLI model")
    p.add_argument("--baseline", default=None, help="another run's results.json: differences in the table and chart")
    p.add_argument("--max-train", type=int, default=0, help="subsample each training set to N rows (0: all)")
    p.add_argument("--max-eval", type=int, default=0, help="subsample each dev set to N rows (0: all)")
    p.add_argument("--max-steps", type=int, default=0, help="cap optimizer steps per cell (smoke runs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="slurm: one array element per (task, seed), then a gather job writes the summary")
    p.add_argument("--sbatch-args", default="", help="extra sbatch options (slurm executor)")
    p.add_argument("--dry-run", action="store_true", help="slurm: write the script, print the sbatch line, submit nothing")
    g = p.add_argument_group("custom task")
    g.add_argument("--custom", default=None, metavar="NAME", help="a task of your own from jsonl/csv/tsv files")
    g.add_argument("--custom-train", default=None)
    g.add_argument("--custom-dev", default=None)
    g.add_argument("--text-columns", default=None, help="a or a,b (sentence pairs)")
    g.add_argument("--label-column", default=None)
    g.add_argument("--metric", default="acc", help="acc | f1 | mcc | pearson (pearson: regression)")
    p.set_defaults(func=_glue)

    p = sub.add_parser("minimal-pairs", formatter_class=FMT, help="zero-shot minimal pairs (BLiMP) scored by PLL",
                       description="For each pair, the model prefers the sentence with the higher pseudo-log-"
                                   "likelihood (Salazar et al. 2020); accuracy per phenomenon and overall.")
    p.add_argument("model")
    p.add_argument("--data", required=True, help="'blimp' (hub, online) or a .jsonl of {good, bad, phenomenon}")
    p.add_argument("--out", default=None, help="directory for results.json / results.md")
    p.add_argument("--limit", type=int, default=0, help="pairs per phenomenon (0: all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_minimal_pairs)
