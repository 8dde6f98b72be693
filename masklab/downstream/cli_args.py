"""What the detection commands share: help formatting, common arguments (data, thresholds, verbosity),
the overlap guard, and the chatter switch; `cli.py` declares the commands, `commands.py` runs them."""
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


def quiet(args) -> None:
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


def verbose_arg(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: absent here keeps `masklab --verbose <stage>`'s value
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and third-party progress output (datasets, transformers)")


def set_handler(p: argparse.ArgumentParser, handler) -> None:
    """Every stage: its own --verbose, and third-party chatter off before the handler runs."""
    verbose_arg(p)
    for a in p._actions:  # options without help text would show no default at all
        if a.help is None and a.option_strings and not any(a.default is v for v in (None, False, argparse.SUPPRESS)):
            a.help = "default: %(default)s"

    def run(args):
        quiet(args)
        return handler(args)

    p.set_defaults(func=run)


def threshold_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--threshold-data", default=None, metavar="FILE",
                   help="benign rows used only to set the --target-fpr threshold (your own traffic; labelled files "
                        f"keep their benign rows): {what}. Needs about 10/target rows (1%% FPR: ~1000); fewer "
                        "gives a warning")


def threshold_texts(args):
    """The benign rows of --threshold-data (None without it); it needs a target FPR to aim at."""
    if not getattr(args, "threshold_data", None):
        return None
    if not args.target_fpr:
        raise MaskLabError("--threshold-data sets the threshold for --target-fpr: give a target above 0")
    from masklab.downstream.predict import read_threshold_texts

    return read_threshold_texts(args.threshold_data, args.text_column, args.label_column, args.positive_label)


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labelled data")
    g.add_argument("--data", default="bastion",
                   help="'bastion' (bastioncorpus, {canary} filled), a .csv/.tsv/.jsonl/.json/.parquet file, or a hub name")
    g.add_argument("--text-column", default="text")
    g.add_argument("--label-column", default="label")
    g.add_argument("--positive-label", default=None,
                   help="label value meaning malicious/positive (default: guessed from names like 'malicious', or 1)")
    g.add_argument("--split", default="train", help="split to load for hub datasets")


def load_data(args):
    from masklab.downstream.data.labelled import load_labelled

    return load_labelled(args.data, args.text_column, args.label_column, args.positive_label, args.split)


def no_overlap(args, *names: str) -> None:
    """--out must not equal, contain or lie inside any input (masklab.atomic.refuse_overlap)."""
    from masklab.atomic import refuse_overlap

    inputs = {}
    for n in names:
        v = getattr(args, n, None)
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            inputs[f"--{n.replace('_', '-')}" + (f"[{i}]" if isinstance(v, list) else "")] = x
    if args.out:
        refuse_overlap(args.out, inputs)


def parse_ints(spec: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise MaskLabError(f"expected comma-separated integers, got '{spec}'") from None

def classifier_settings(args):
    from masklab.downstream.classifiers.models import Settings

    return Settings(C=args.C, class_weight=None if args.class_weight == "none" else args.class_weight,
                    scale=args.scale, normalize=args.normalize)
