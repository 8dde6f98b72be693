"""Which checkpoint a run continues from, and what must match for the resume to be exact."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from masklab.errors import ConfigError, MaskLabError
from masklab.pretrain.loop import distributed as D
from masklab.pretrain.checkpoint.store import latest_checkpoint
from masklab.pretrain.data.collator import DATA_HINTS, DATA_OLD_DEFAULTS
from masklab.pretrain.masking import masking_compat


# The architecture: a change makes the saved weights mean something else (or not fit at all).
MODEL_KEYS = ("preset", "vocab_size", "pad_vocab_multiple", "hidden_size", "num_layers", "num_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
              "global_attn_every", "local_window", "rope_theta", "local_rope_theta")


def gapped_local_layers(cfg) -> bool:
    """Whether a modernbert local layer runs on a stream with rows removed (layers < masking.insert_layer
    under late insertion; Token Dropping's range, the last layer excluded): there its window is over
    true positions since `model.local_window_over` exists (before, over stream rows)."""
    mo, m = cfg.model, cfg.masking
    if mo.preset != "modernbert":
        return False
    local = lambda i: i % mo.global_attn_every != 0
    if m.insertion == "late" and any(local(i) for i in range(m.insert_layer)):
        return True
    td = mo.token_drop
    end = td.end_layer if td.end_layer >= 0 else mo.num_layers + td.end_layer
    return td.rate > 0 and any(local(i) for i in range(td.start_layer, min(end, mo.num_layers - 1)))


def resume_compat(cfg, world: D.World, engine_kind: str, tokenizer_sha: str) -> dict:
    """What must match between a checkpoint and the run resuming it (recorded in state.json).

    Global batch, seq len, seed and tokenizer fix the data order and the masks (data position is
    step * global batch), so they must match. The engine must match (a DeepSpeed checkpoint keeps
    its optimizer in DeepSpeed's format). DDP and single-process runs may change world size and
    micro-batch (only the split of the same global batch changes: same result up to fp
    summation order). DeepSpeed runs must also keep world size and ZeRO stage: ZeRO partitions
    the optimizer state by rank, and we refuse rather than re-partition. The model architecture
    (MODEL_KEYS) must match: the checkpoint's weights belong to it."""
    tc = cfg.train
    compat = {"data.batch_size": cfg.data.batch_size, "data.seq_len": cfg.data.seq_len, "train.seed": tc.seed,
              "data.shards_sha": tokenizer_sha, "engine": engine_kind == "deepspeed"}
    compat.update({f"model.{k}": getattr(cfg.model, k) for k in MODEL_KEYS})
    if gapped_local_layers(cfg):  # only where it changes what the model computes
        compat["model.local_window_over"] = "positions"
    compat.update(masking_compat(cfg))
    if engine_kind == "deepspeed":
        compat.update({"deepspeed.world_size": world.world_size, "train.zero_stage": tc.zero_stage})
    return compat


_HINT = {"engine": "the checkpoint was written by a different engine (True = DeepSpeed): use the launcher it was "
                   "trained with", "deepspeed.world_size": "DeepSpeed resumes need the same number of processes",
         "train.zero_stage": "ZeRO optimizer state is partitioned per stage",
         "masking.algorithm": "this version of MaskLab draws different masks from the same seed than the one that "
                              "wrote the checkpoint",
         "masking.schedule_length": "the masking-rate schedule runs over masking.schedule_steps (0 = train.max_steps): "
                                    "pin masking.schedule_steps to the checkpoint's value to train longer",
         "model.local_window_over": "modernbert local layers that run on a stream with rows removed (late-mask "
                                    "insertion's visible stream, Token Dropping's kept rows) now take local_window "
                                    "over true positions; the checkpoint was trained with it over stream rows",
         "masking.informask_table": "InforMask weight tables before v3 had PMI rates biased upwards; the run was "
                                    "trained with such a table and cannot continue with a rebuilt one",
         **DATA_HINTS}
# Keys that checkpoints written before they existed are known to have had.
_OLD_DEFAULTS = {"masking.algorithm": 1, "masking.informask_table": "masklab-token-weights-v2",
                 "model.local_window_over": "rows", **DATA_OLD_DEFAULTS}


def check_resume_compatible(saved: dict, current: dict) -> None:
    """A resume that would silently change the data order, masking or vocabulary is refused, not converted."""
    have = {**_OLD_DEFAULTS, **saved.get("compat", {})}
    bad = [f"{k}: checkpoint {have[k]} vs now {v}" + (f" ({_HINT[k]})" if k in _HINT else "")
           for k, v in current.items() if k in have and have[k] != v]
    if bad:
        raise MaskLabError("cannot resume: the run changed in a way that breaks exact resume (" + "; ".join(bad) +
                           "). Use a new train.out_dir, or train.resume=never.")


def check_out_dir_free(run_dir: Path, resume: str, ckpt: Optional[Path]) -> None:
    """A run that does not continue out_dir's own checkpoints must not write beside them: its
    checkpoints would mix with theirs, and a later automatic resume could pick the other run's
    newest one. Rolling back to an earlier checkpoint of the same out_dir is allowed."""
    if resume == "auto":
        return
    existing = latest_checkpoint(run_dir)
    if existing is None or (ckpt is not None and Path(run_dir).resolve() in Path(ckpt).resolve().parents):
        return
    raise ConfigError(f"train.out_dir={run_dir} already holds checkpoints (newest {existing.name}) and "
                      f"train.resume={resume} starts another run there: use a new train.out_dir, remove "
                      f"{Path(run_dir) / 'checkpoints'}, or train.resume=auto to continue it")


def checkpoint_to_resume(run_dir: Path, resume: str) -> Optional[Path]:
    """train.resume -> the checkpoint to continue (None: start at step 0)."""
    if resume == "auto":
        return latest_checkpoint(run_dir)
    if resume in ("never", ""):
        return None
    return Path(resume)
