"""`masklab evaluate`: masked accuracy / loss at a fixed 15% rate and seed, plus pseudo-log-likelihood."""
from __future__ import annotations

import json


def _evaluate(args) -> int:
    import numpy as np
    from omegaconf import OmegaConf

    from data_prep.shards import ShardSet
    from pretrain.data import Collator, eval_batches
    from pretrain.evaluate import evaluate_batches
    from pretrain.hf_io import load_pretrained
    from pretrain.pll import pll_report

    model, tok, cfg = load_pretrained(args.checkpoint)
    cfg = OmegaConf.merge(cfg, {"data": {"shards": args.shards}, "masking": {"eval_rate": 0.15, "insertion": "input"},
                                "train": {"seed": args.seed}})
    shards = ShardSet(args.shards, args.split)
    from data_prep.tokenizer import load_tokenizer
    from masklab.errors import DataError
    from pretrain.hf_io import resolve_checkpoint

    if shards.tokenizer.sha256 != load_tokenizer(resolve_checkpoint(args.checkpoint) / "tokenizer")[1].sha256:
        raise DataError(f"{args.shards} was tokenized with another tokenizer than {args.checkpoint}")
    c = Collator(cfg, shards)
    res = evaluate_batches(model, eval_batches(c, args.batch_size, args.batches), __import__("torch").device("cpu"))
    texts = []
    for r in c.sample_ids(0, min(args.pll_sentences, len(c.samples))):
        toks, _ = c.sample_tokens(int(r))
        texts.append(tok.decode(toks[1:-1].tolist()))
    res.update(pll_report(model, tok, texts, set(c.tok.special_ids), c.tok.mask_id) if texts else {})
    print(json.dumps(res, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="masked accuracy/loss at a fixed 15% rate, and pseudo-log-likelihood")
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("--shards", required=True, help="a `masklab prep` output (same tokenizer)")
    p.add_argument("--split", default="validation")
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pll-sentences", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_evaluate)
