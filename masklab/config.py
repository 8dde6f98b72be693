"""Structured configs: one dataclass tree, loaded from composed YAML + dotlist overrides.

Every YAML file and override is merged onto the schema in OmegaConf struct mode, so a
mistyped key or a wrong value type is an error (naming the key and the nearest valid one),
never a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from masklab.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class TokenDropConfig:
    """Token Dropping (Hou et al. 2022): layers [start_layer, end_layer) see only the most important tokens."""
    rate: float = 0.0  # fraction of each sequence's tokens dropped there; 0 = off
    start_layer: int = 0
    end_layer: int = -1  # exclusive; < 0 counts from the end (-1: every layer but the last)
    ema_decay: float = 0.9  # per optimizer step, of the per-token-id MLM loss (the importance)


@dataclass
class ModelConfig:
    preset: str = "bert"  # bert | modernbert
    vocab_size: int = 0  # 0: taken from the tokenizer, then padded to pad_vocab_multiple
    pad_vocab_multiple: int = 64
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # sparse prediction: "head" runs the MLM head on masked tokens only; "last_layer" also
    # computes the last encoder layer's queries/MLP for masked tokens only; "none" = dense.
    sparse_prediction: str = "head"
    # modernbert preset
    global_attn_every: int = 3
    local_window: int = 128
    rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    token_drop: TokenDropConfig = field(default_factory=TokenDropConfig)
    # carried from / to Hugging Face for a lossless round trip: bert's pooler (frozen, unused by
    # the MLM loss) and the attention-probability dropout (our kernels apply none; export writes it)
    pooler: bool = False
    attention_dropout: float = 0.0


@dataclass
class MaskingConfig:
    rate: float = 0.15
    schedule: str = "constant"  # constant | linear | cosine | step
    rate_end: float = 0.15  # target of linear / cosine / step schedules
    schedule_steps: int = 0  # 0: train.max_steps
    step_at: float = 0.5  # fraction of schedule_steps where `step` switches
    eval_rate: float = 0.15
    unit: str = "token"  # token | whole_word | pmi | span
    selector: str = "budget"  # budget (floor(rate*n + U)) | bernoulli
    mask_prob: float = 0.8
    random_prob: float = 0.1
    keep_prob: float = 0.1
    corrupt_per_unit: bool = False
    span_p: float = 0.2
    span_max: int = 10
    span_law: str = "truncated"  # truncated (SpanBERT: Geo(span_p) renormalised on [1, span_max]) | clip (min(Geo, max))
    pmi_table: Optional[str] = None
    informask_weights: Optional[str] = None  # token weight table (`masklab informask-weights`): weighted selection
    informask_score: str = "pmi"  # pmi (InforMask's informative relevance -> token rates) | surprisal (-log p)
    insertion: str = "input"  # input | late
    insert_layer: int = 0


@dataclass
class DataConfig:
    shards: str = MISSING  # directory written by `masklab prep`
    seq_len: int = 128  # max tokens per sample, [CLS] and [SEP] included
    batch_size: int = 32  # samples per optimizer step (global)
    micro_batch_size: int = 0  # per rank per forward; 0 = batch_size / world_size
    num_workers: int = 0
    eval_batches: int = 8
    packing: str = "none"  # none (one chunk per sequence) | docs (packed, attention per document) | concat
    batch_tokens: int = 0  # > 0: each optimizer step takes units up to this many tokens (global), not batch_size
    micro_batch_tokens: int = 0  # token budget per rank per forward; 0 = batch_tokens / world_size


@dataclass
class KernelsConfig:
    backend: str = "auto"  # auto | triton | flash_attn | torch


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    max_steps: int = 300
    lr: float = 5e-4
    min_lr_ratio: float = 0.0
    warmup_steps: int = 30
    decay: str = "linear"  # linear | cosine | constant
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    log_every: int = 10
    eval_every: int = 100
    save_every: int = 100
    keep_last: int = 2
    resume: str = "auto"  # auto | never | <checkpoint dir>; never/other dir refuse an out_dir with checkpoints
    max_nan_skips: int = 5
    stop_poll_steps: int = 10  # distributed: ranks agree on a stop signal every this many steps (a host sync)
    progress: bool = True
    tensorboard: bool = True
    num_threads: int = 0  # torch intra-op threads on CPU; 0 = torch default
    launcher: str = "auto"  # auto | single | ddp | deepspeed
    zero_stage: int = 1
    dist_timeout_s: int = 300
    compile: Optional[bool] = None  # torch.compile the encoder layers; None: on for CUDA, off for CPU
    allow_tf32: bool = True  # CUDA: fp32 matmuls on TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32)
    # load DeepSpeed state (pickle: code can run) from a checkpoint not signed by this out_dir's run key
    trust_checkpoint: bool = False
    # continued pretraining: start a NEW run (step 0, fresh optimizer) from an HF directory or a
    # MaskLab run / checkpoint; the model section comes from the source (pretrain/init_from.py)
    init_from: str = ""


@dataclass
class MaskLabConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    kernels: KernelsConfig = field(default_factory=KernelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    defaults: List[str] = field(default_factory=list)  # composition: configs/<part>/<name>.yaml


def _valid_keys(schema: Any = MaskLabConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
            keys.extend(_valid_keys(f.type, prefix + f.name + "."))
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            keys.extend(_valid_keys(f.default_factory, prefix + f.name + "."))
    return keys


def _nearest(key: str) -> str:
    valid = _valid_keys()
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
    if not match:  # compare the leaf name too, so `train.lr_max` still finds `train.lr`
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in valid}
        m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.4)
        match = [leaves[m[0]]] if m else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        raise ConfigError(f"{source}: unknown config key '{key}'{_nearest(str(key))}") from None
    except ValidationError as e:
        msg = str(e.msg).splitlines()[0]
        raise ConfigError(f"{source}: bad value for '{getattr(e, 'full_key', '?')}': {msg}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {str(e).splitlines()[0]}") from None


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse config {path}: {e}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return cfg


def _compose(path: Path, base: DictConfig, seen: tuple = ()) -> DictConfig:
    """Merge `path` onto `base`, after the parts its `defaults:` list names (depth first)."""
    if path in seen:
        raise ConfigError(f"config composition cycle through {path}")
    raw = _read_yaml(path)
    entries = raw.pop("defaults", None)
    entries = [] if entries is None else entries
    if not (OmegaConf.is_list(entries) or isinstance(entries, list)) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{path}: 'defaults' must be a list of config names (e.g. `defaults: [model/bert_tiny]`), "
                          f"got {OmegaConf.to_container(entries) if OmegaConf.is_config(entries) else entries!r}")
    for entry in entries:
        part = CONFIG_DIR / f"{entry}.yaml"
        if not part.is_file():
            part = (path.parent / f"{entry}.yaml").resolve()
        if not part.is_file():
            raise ConfigError(f"{path}: defaults entry '{entry}' matches no file under {CONFIG_DIR}")
        base = _compose(part, base, seen + (path,))
    return _merge(base, raw, str(path))


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Schema <- config file (with its composed defaults) <- overrides, in order; struct mode.
    An override is `key=value` (dotlist) or `+part/name` (merge configs/part/name.yaml)."""
    cfg = OmegaConf.structured(MaskLabConfig)
    OmegaConf.set_struct(cfg, True)
    if path is not None:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / p).exists():
            p = CONFIG_DIR / p
        cfg = _compose(p, cfg)
    for ov in overrides or []:
        if ov.startswith("+"):  # compose one more part, e.g. `+masking/span` -> configs/masking/span.yaml
            part = CONFIG_DIR / f"{ov[1:]}.yaml"
            if not part.is_file():
                raise ConfigError(f"override '{ov}': no config part {part}")
            cfg = _compose(part, cfg)
            continue
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([ov]), f"override '{ov}'")
    validate(cfg)
    return cfg


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
    need(0.0 <= mo.attention_dropout < 1.0, f"model.attention_dropout={mo.attention_dropout} must lie in [0, 1)")
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


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml_text(text: str, source: str = "saved config") -> DictConfig:
    """Rebuild a (struct, validated) config from the YAML saved beside a checkpoint; anything else
    (random bytes, broken YAML, a list, an empty file) is one ConfigError naming `source`."""
    cfg = OmegaConf.structured(MaskLabConfig)
    OmegaConf.set_struct(cfg, True)
    try:
        saved = OmegaConf.create(text)
    except Exception as e:  # yaml.YAMLError, and OmegaConf's own errors for odd scalars
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(saved, DictConfig) or not saved:
        got = "an empty file" if not saved else f"a {type(OmegaConf.to_container(saved)).__name__}"
        raise ConfigError(f"{source}: must be a mapping (the resolved config a checkpoint stores), got {got}")
    cfg = _merge(cfg, saved, source)
    validate(cfg)
    return cfg


def load_saved_config(path: str | Path) -> DictConfig:
    """The config.yaml stored in a checkpoint -> a validated config, or one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (not a MaskLab checkpoint?)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8): the checkpoint's config is damaged") from None
    return from_yaml_text(text, str(path))
