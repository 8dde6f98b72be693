"""Config checks that span several keys or need a range, run at start-up rather than mid-run."""
from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from masklab.errors import ConfigError


def require_set(cfg: DictConfig, *keys: str) -> None:
    """Keys left as ??? in the config (e.g. data.shards in a recipe) must be given before use."""
    for k in keys:
        parent, _, leaf = k.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"config key '{k}' must be set (e.g. as an override: {k}=...)")


def validate(cfg: DictConfig) -> None:
    """Checks that span several keys or need a range, at start-up rather than mid-run."""
    m, t, mo = cfg.masking, cfg.train, cfg.model

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    for k in ("rate", "rate_end", "eval_rate"):
        need(0.0 <= m[k] <= 1.0, f"masking.{k}={m[k]} must lie in [0, 1]")
    # a rate of 0 predicts nothing: the loss is 0 and training silently learns nothing
    need(m.rate > 0.0, "masking.rate=0 masks nothing (the MLM loss would be 0): use a rate in (0, 1]")
    need(m.schedule == "constant" or m.rate_end > 0.0, f"masking.rate_end=0 with masking.schedule={m.schedule} "
         "masks nothing by the end of the schedule: use a rate_end in (0, 1]")
    need(m.eval_rate > 0.0, "masking.eval_rate=0 masks nothing, so evaluation has no predictions: use (0, 1]")
    probs = (m.mask_prob, m.random_prob, m.keep_prob)
    need(all(p >= 0 for p in probs) and abs(sum(probs) - 1.0) < 1e-6,
         f"masking.mask_prob/random_prob/keep_prob must be >= 0 and sum to 1, got {probs}")
    need(m.schedule in ("constant", "linear", "cosine", "step"), f"masking.schedule='{m.schedule}' is not one of constant, linear, cosine, step")
    need(m.unit in ("token", "whole_word", "pmi", "span"), f"masking.unit='{m.unit}' is not one of token, whole_word, pmi, span")
    need(m.selector in ("budget", "bernoulli"), f"masking.selector='{m.selector}' is not one of budget, bernoulli")
    need(m.insertion in ("input", "late"), f"masking.insertion='{m.insertion}' is not one of input, late")
    need(0.0 < m.span_p <= 1.0, f"masking.span_p={m.span_p} must lie in (0, 1]")
    need(m.span_max >= 1, f"masking.span_max={m.span_max} must be >= 1")
    need(m.span_law in ("truncated", "clip"), f"masking.span_law='{m.span_law}' is not one of truncated, clip")
    need(0.0 <= m.step_at <= 1.0, f"masking.step_at={m.step_at} must lie in [0, 1]")
    need(m.informask_score in ("pmi", "surprisal"), f"masking.informask_score='{m.informask_score}' is not one of pmi, surprisal")
    if m.insertion == "late":
        need(1 <= m.insert_layer < mo.num_layers,
             f"masking.insert_layer={m.insert_layer} must be in [1, model.num_layers-1={mo.num_layers - 1}] for late insertion")
    td = mo.token_drop
    need(0.0 <= td.rate < 1.0, f"model.token_drop.rate={td.rate} must lie in [0, 1)")
    need(0.0 <= td.ema_decay < 1.0, f"model.token_drop.ema_decay={td.ema_decay} must lie in [0, 1)")
    if td.rate > 0:
        end = td.end_layer if td.end_layer >= 0 else mo.num_layers + td.end_layer
        need(1 <= td.start_layer < end <= mo.num_layers - 1,
             f"model.token_drop: start_layer={td.start_layer}, end_layer={td.end_layer} must satisfy 1 <= start < end "
             f"<= num_layers-1={mo.num_layers - 1} (the first and the last layer see every token)")
        need(m.insertion == "input", "model.token_drop needs masking.insertion=input (late insertion changes the "
                                     "token stream of the first layers)")
    need(mo.preset in ("bert", "modernbert"), f"model.preset='{mo.preset}' is not one of bert, modernbert")
    need(mo.num_heads >= 1 and mo.num_layers >= 1 and mo.hidden_size >= 1,
         "model.hidden_size, model.num_layers and model.num_heads must be >= 1")
    need(mo.hidden_size % mo.num_heads == 0, f"model.hidden_size={mo.hidden_size} is not divisible by model.num_heads={mo.num_heads}")
    # the attention kernels (Triton, flash_attn, torch reference) have no dropout on the probabilities:
    # a value > 0 would be validated, exported and silently never applied
    need(mo.attention_dropout == 0.0, f"model.attention_dropout={mo.attention_dropout} is not supported: MaskLab's "
                                      "attention kernels apply no dropout to attention probabilities; set "
                                      "model.attention_dropout=0 (model.hidden_dropout still regularises)")
    need(mo.sparse_prediction in ("none", "head", "last_layer"), f"model.sparse_prediction='{mo.sparse_prediction}' is not one of none, head, last_layer")
    if mo.preset == "modernbert":
        need(mo.global_attn_every >= 1, "model.global_attn_every must be >= 1")
        need(mo.sparse_prediction != "last_layer" or (mo.num_layers - 1) % mo.global_attn_every == 0,
             f"model.sparse_prediction=last_layer needs a global last layer: num_layers-1={mo.num_layers - 1} "
             f"is not a multiple of model.global_attn_every={mo.global_attn_every}")
    need(cfg.data.seq_len >= 3, f"data.seq_len={cfg.data.seq_len} must be >= 3 ([CLS] x [SEP])")
    need(cfg.data.seq_len <= mo.max_position_embeddings, f"data.seq_len={cfg.data.seq_len} exceeds model.max_position_embeddings={mo.max_position_embeddings}")
    need(cfg.data.batch_size >= 1, "data.batch_size must be >= 1")
    need(cfg.data.packing in ("none", "docs", "concat"), f"data.packing='{cfg.data.packing}' is not one of none, docs, concat")
    need(cfg.data.batch_tokens >= 0 and cfg.data.micro_batch_tokens >= 0,
         "data.batch_tokens and data.micro_batch_tokens must be >= 0")
    need(not cfg.data.micro_batch_tokens or cfg.data.batch_tokens,
         "data.micro_batch_tokens needs data.batch_tokens (the token budget of a step)")
    need(not cfg.data.batch_tokens or cfg.data.batch_tokens >= 2 * cfg.data.seq_len,
         f"data.batch_tokens={cfg.data.batch_tokens} must be >= 2 x data.seq_len={cfg.data.seq_len}")
    need(t.max_steps >= 1, "train.max_steps must be >= 1")
    bad = [x for x in t.loggers if x not in ("tensorboard", "wandb")]
    need(not bad and len(set(t.loggers)) == len(t.loggers),
         f"train.loggers={list(t.loggers)}: each of tensorboard, wandb at most once")
    need(math.isfinite(t.lr) and t.lr > 0, f"train.lr={t.lr} must be a finite number > 0")
    need(len(t.betas) == 2 and all(0.0 <= b < 1.0 for b in t.betas), f"train.betas={list(t.betas)} must be two numbers in [0, 1)")
    need(math.isfinite(t.eps) and t.eps > 0, f"train.eps={t.eps} must be a finite number > 0")
    need(0.0 <= t.min_lr_ratio <= 1.0, f"train.min_lr_ratio={t.min_lr_ratio} must lie in [0, 1]")
    for k in ("weight_decay", "grad_clip"):
        need(math.isfinite(t[k]) and t[k] >= 0, f"train.{k}={t[k]} must be a finite number >= 0")
    for k in ("log_every", "eval_every", "save_every", "max_nan_skips", "stop_poll_steps", "dist_timeout_s"):
        need(t[k] >= 1, f"train.{k}={t[k]} must be >= 1")
    for k in ("warmup_steps", "keep_last", "num_threads"):
        need(t[k] >= 0, f"train.{k}={t[k]} must be >= 0")
    need(cfg.data.num_workers >= 0, f"data.num_workers={cfg.data.num_workers} must be >= 0")
    need(cfg.data.micro_batch_size >= 0, f"data.micro_batch_size={cfg.data.micro_batch_size} must be >= 0 (0: batch_size / world size)")
    need(cfg.data.eval_batches >= 0, f"data.eval_batches={cfg.data.eval_batches} must be >= 0")
    need(t.precision in ("fp32", "bf16"), f"train.precision='{t.precision}' is not one of fp32, bf16")
    need(t.device in ("auto", "cpu", "cuda"), f"train.device='{t.device}' is not one of auto, cpu, cuda")
    need(t.decay in ("linear", "cosine", "constant"), f"train.decay='{t.decay}' is not one of linear, cosine, constant")
    need(t.launcher in ("auto", "single", "ddp", "deepspeed"), f"train.launcher='{t.launcher}' is not one of auto, single, ddp, deepspeed")
    need(cfg.kernels.backend in ("auto", "triton", "flash_attn", "torch"),
         f"kernels.backend='{cfg.kernels.backend}' is not one of auto, triton, flash_attn, torch")
