"""Memory a model needs, estimated from its config before a single tensor is allocated.

`model.hidden_size=10000000` or a 1 KB config.json with hidden_size 2**20 would otherwise ask
the allocator for tens of GB and die in it (a traceback, or the OOM killer). The estimate counts
the parameters of a BERT-style encoder (embeddings, layers, MLM head), in fp32: 4 bytes per
parameter to hold the weights, 16 to train them (weights, gradients, AdamW's two moments).
It is compared with what the machine has: free CUDA memory on a GPU, else the smaller of
MemAvailable (psutil / /proc/meminfo) and the cgroup's limit.
"""
from __future__ import annotations

import math

from pathlib import Path
from typing import Optional

from masklab.errors import CheckpointError, ConfigError

WEIGHT_BYTES = 4  # fp32
TRAIN_BYTES = 16  # fp32 weights + gradients + AdamW exp_avg + exp_avg_sq


def encoder_params(vocab: int, hidden: int, layers: int, intermediate: int, max_positions: int) -> int:
    """Parameters of a BERT-style encoder with a tied MLM head (ModernBERT has fewer: an upper bound)."""
    embeddings = (vocab + max_positions + 2) * hidden + 2 * hidden
    layer = 4 * hidden * hidden + 2 * hidden * intermediate + intermediate + 9 * hidden
    head = hidden * hidden + 3 * hidden + vocab
    return embeddings + layers * layer + head


def _cgroup_limit() -> Optional[int]:
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            v = Path(f).read_text().strip()
        except OSError:
            continue
        if v.isdigit() and int(v) < 1 << 60:
            return int(v)
    return None


def available_bytes(device=None) -> tuple[int, str]:
    """-> (bytes, where): free memory of a CUDA device, else available host RAM."""
    import torch

    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free on {device}"
    try:
        import psutil

        ram = int(psutil.virtual_memory().available)
    except ImportError:  # /proc/meminfo: "MemAvailable:   123456 kB"
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable"))
        ram = int(line.split()[1]) * 1024
    limit = _cgroup_limit()
    return (min(ram, limit), "available (cgroup limit)") if limit and limit < ram else (ram, "available RAM")


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"


def check_fits(keys: dict, n_params: int, training: bool, device=None, what: str = "the model",
               per_param: Optional[float] = None) -> None:
    """ConfigError naming `keys` (name -> value), the bytes needed and those available.
    `per_param` overrides the bytes per parameter (DeepSpeed ZeRO partitions the AdamW state).
    Activations are not counted: the estimate is a lower bound, so a refusal is never a false alarm."""
    per = per_param if per_param is not None else (TRAIN_BYTES if training else WEIGHT_BYTES)
    need = int(n_params * per)
    have, where = available_bytes(device)
    if need <= have:
        return
    shown = ", ".join(f"{k}={v}" for k, v in keys.items())
    kind = "fp32 weights, gradients and AdamW state" if training else "fp32 weights"
    raise ConfigError(f"{what}: {shown} make {n_params:,} parameters; {kind} need {_gb(need)}, but only "
                      f"{_gb(have)} is {where}: use a smaller model")


def check_model_fits(model_cfg, vocab: int, training: bool, device=None, per_param: Optional[float] = None) -> None:
    """Our ModelConfig (resolved vocab) -> check_fits, naming the model.* keys."""
    keys = {"model.hidden_size": int(model_cfg.hidden_size), "model.num_layers": int(model_cfg.num_layers),
            "model.intermediate_size": int(model_cfg.intermediate_size), "vocab": int(vocab),
            "model.max_position_embeddings": int(model_cfg.max_position_embeddings)}
    n = encoder_params(*(keys[k] for k in ("vocab", "model.hidden_size", "model.num_layers",
                                           "model.intermediate_size", "model.max_position_embeddings")))
    check_fits(keys, n, training, device, per_param=per_param)


def hf_config_params(config) -> tuple[dict, int]:
    """-> ({config.json key: value}, parameter estimate) of a transformers config."""
    def get(name, default=0):
        v = getattr(config, name, default)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    keys = {"hidden_size": get("hidden_size"), "num_hidden_layers": get("num_hidden_layers"),
            "intermediate_size": get("intermediate_size"), "vocab_size": get("vocab_size"),
            "max_position_embeddings": get("max_position_embeddings")}
    n = encoder_params(keys["vocab_size"], keys["hidden_size"], keys["num_hidden_layers"],
                       keys["intermediate_size"], keys["max_position_embeddings"])
    return keys, n


def check_hf_config_fits(config, path, training: bool, device=None) -> None:
    """A Hugging Face config (read with AutoConfig) -> check_fits naming its config.json keys."""
    keys, n = hf_config_params(config)
    check_fits(keys, n, training, device, what=f"{Path(path) / 'config.json'}")


def check_weights_match(config, path, stored: int) -> None:
    """A config that promises far more parameters than its weight files hold (a 1 KB config.json
    beside a tiny model.safetensors) is refused before building the model it describes."""
    keys, n = hf_config_params(config)
    if n > 2 * stored + (1 << 20):
        shown = ", ".join(f"{k}={v}" for k, v in keys.items())
        raise ConfigError(f"{Path(path) / 'config.json'}: {shown} describe {n:,} parameters, but the weight files "
                          f"hold {stored:,}: the config does not belong to these weights")


def stored_params(files) -> int:
    """Number of values in safetensors files, read from their headers (no tensor is loaded)."""
    from safetensors import safe_open

    n = 0
    for f in files:
        try:
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    n += math.prod(h.get_slice(k).get_shape())
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"corrupted weights file {f}: {e}") from None
    return n
