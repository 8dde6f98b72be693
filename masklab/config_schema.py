"""The config schema: one dataclass tree, the keys and defaults every MaskLab run has.

Loading (YAML composition, overrides, saved configs) is `masklab.config`; the checks that span
several keys or need a range are `masklab.config_validation`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

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
    # where metrics go besides metrics.jsonl (always written): tensorboard | wandb (optional extra
    # `pip install masklab[wandb]`; project train.wandb_project, group WANDB_RUN_GROUP / train.wandb_group)
    loggers: List[str] = field(default_factory=lambda: ["tensorboard"])
    tensorboard: Optional[bool] = None  # before train.loggers: false drops tensorboard, true adds it (old configs)
    wandb_project: str = "masklab"
    wandb_group: str = ""  # "" = $WANDB_RUN_GROUP (a sweep sets it to its name, so its cells are grouped)
    num_threads: int = 0  # torch intra-op threads on CPU; 0 = torch default
    launcher: str = "auto"  # auto | single | ddp | deepspeed
    zero_stage: int = 1
    dist_timeout_s: int = 300
    compile: Optional[bool] = None  # torch.compile the encoder layers; None: on for CUDA, off for CPU
    allow_tf32: bool = True  # CUDA: fp32 matmuls on TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32)
    # load DeepSpeed state (pickle: code can run) from a checkpoint not signed by this out_dir's run key
    trust_checkpoint: bool = False
    # load (resume, init_from) a checkpoint that has no SHA256SUMS.json, its files unchecked
    allow_missing_checksums: bool = False
    # continued pretraining: start a NEW run (step 0, fresh optimizer) from an HF directory or a
    # MaskLab run / checkpoint; the model section comes from the source (pretrain/hf/init_from.py)
    init_from: str = ""


@dataclass
class MaskLabConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    kernels: KernelsConfig = field(default_factory=KernelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    defaults: List[str] = field(default_factory=list)  # composition: configs/<part>/<name>.yaml
