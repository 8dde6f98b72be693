"""`masklab <stage>`: one console script, a subcommand per stage.

Each stage module exposes `register(subparsers)`, which adds its parsers and sets
`func=handler` (handler(args) -> int). User errors are `MaskLabError`s: printed as one
clear line on stderr, exit code 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from masklab.errors import MaskLabError

# module paths whose `register(subparsers)` add subcommands, in --help order
STAGES = [
    "masklab.data_prep.cli",  # prep, pmi
    "masklab.pretrain.cli",  # train, export, import, evaluate
    "masklab.downstream.cli",  # embed, classify, predict, finetune, ensemble, carry, report
    "masklab.env",  # env
    "masklab.smoke",  # smoke
    "masklab.sweep.cli",  # sweep, sweep-cell, compare
    "masklab.kernels.gpu_check_cli",  # gpu-check
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="masklab", description="MaskLab: fast MLM pretraining and detection.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for mod in STAGES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):  # that stage is not part of this install
                continue
            raise
        module.register(sub)
    for stage in sub.choices.values():  # every stage that may load a checkpoint (resume, export, evaluate, embed, ...)
        stage.add_argument("--allow-missing-checksums", action="store_true",
                           help="load MaskLab checkpoints that have no SHA256SUMS.json (their files are not checked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    if getattr(args, "allow_missing_checksums", False):
        from masklab.pretrain.checkpoint.integrity import allow_missing_checksums

        allow_missing_checksums(True)
    try:
        return int(args.func(args) or 0)
    except MaskLabError as e:
        msg = str(e)
        if "Original Traceback" in msg:  # re-raised from a DataLoader worker: its own message is the last line
            msg = msg.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"masklab {args.stage}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"masklab {args.stage}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
