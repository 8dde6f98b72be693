"""`masklab train | export | import | evaluate`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from masklab.config import load_config, to_yaml


def _train(args: argparse.Namespace) -> int:
    from masklab.pretrain.loop.train import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "last"}, default=str))
    return 0


def _export(args: argparse.Namespace) -> int:
    from masklab.pretrain.hf.convert import export_hf

    out = export_hf(args.checkpoint, args.out, overwrite=args.overwrite)
    head = json.loads((out / "masklab_export.json").read_text()).get("mlm_head")
    print(f"exported Hugging Face model: {out}" + (" (MLM head: initialised on import, not pretrained)"
                                                    if head == "initialised" else ""))
    return 0


def _import(args: argparse.Namespace) -> int:
    """HF directory -> a MaskLab checkpoint (step 0): a `train.init_from` source and a valid
    `train.resume` point (its state.json carries the compat keys an import can know)."""
    import shutil
    import tempfile

    from omegaconf import OmegaConf

    from masklab.data_prep.tokenizer import file_sha256, save_tokenizer
    from masklab.errors import CheckpointError
    from masklab.pretrain.checkpoint.store import save_checkpoint
    from masklab.pretrain.hf.convert import import_hf_model
    from masklab.pretrain.masking import MASKING_ALGORITHM

    from masklab.atomic import refuse_overlap

    refuse_overlap(args.out, {"hf_dir": args.hf_dir})
    run = Path(args.out)
    if run.exists() and any(run.iterdir()):
        raise CheckpointError(f"import target {run} exists and is not empty")
    imp = import_hf_model(args.hf_dir)
    cfg = OmegaConf.merge(imp.cfg, {"data": {"shards": "<set data.shards>"}})
    run.parent.mkdir(parents=True, exist_ok=True)
    tmp_tok = Path(tempfile.mkdtemp(prefix=f".{run.name}.tok-", dir=run.parent))  # fresh: never someone's folder
    f = save_tokenizer(imp.tokenizer, tmp_tok)
    # batch size, seed and masking are the resuming run's choice; the tokenizer and the masking
    # algorithm are not (a resume on data from another tokenizer is refused by train.py)
    compat = {"masking.algorithm": MASKING_ALGORITHM, "data.shards_sha": file_sha256(f)}
    state = {"imported_from": str(Path(args.hf_dir).resolve()), "mlm_head": imp.mlm_head, "compat": compat,
             "data_position": 0}
    try:
        path = save_checkpoint(run, 0, imp.model, None, state, to_yaml(cfg), tmp_tok)
    finally:
        shutil.rmtree(tmp_tok, ignore_errors=True)
    print(f"imported {args.hf_dir} -> {path}" + (" (no MLM head in the source: initialised at random)"
                                                 if imp.mlm_head == "initialised" else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain an MLM (single process, torchrun DDP, or DeepSpeed)",
                       description="Train from a YAML config with dotlist overrides, e.g. "
                                   "`masklab train configs/smoke_cpu.yaml train.max_steps=50`. Resumes automatically "
                                   "from the latest complete checkpoint in train.out_dir.")
    p.add_argument("config", help="YAML config (path, or name under configs/)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides key=value")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a checkpoint to a Hugging Face directory")
    p.add_argument("checkpoint", help="checkpoint directory or run directory (latest checkpoint)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)

    p = sub.add_parser("import", help="import a Hugging Face BERT/ModernBERT directory as a MaskLab checkpoint")
    p.add_argument("hf_dir")
    p.add_argument("--out", required=True, help="run directory to create")
    p.set_defaults(func=_import)
    try:
        from masklab.pretrain.evaluate.cli import register as register_eval
    except ModuleNotFoundError:
        return
    register_eval(sub)
