"""Helpers for the model tests: tiny random checkpoints of both presets, padded batches of mixed lengths."""
import torch

from masklab.data_prep import load_tokenizer
from masklab.config import load_config, to_yaml
from masklab.pretrain.checkpoint.store import save_checkpoint
from masklab.pretrain.model import build_model

PRESETS = {
    "bert": ["model.preset=bert", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
             "model.intermediate_size=96"],
    # 4 layers: global, local, local, global; window 8 < the sequence lengths below
    "modernbert": ["model.preset=modernbert", "model.hidden_size=64", "model.num_layers=4", "model.num_heads=2",
                   "model.intermediate_size=96", "model.local_window=8", "model.global_attn_every=3",
                   "model.layer_norm_eps=1e-5"],
}


def tiny_cfg(prepared_data, preset, extra=()):
    return load_config(None, [f"data.shards={prepared_data}", "model.hidden_dropout=0", *PRESETS[preset], *extra])


def checkpoint(prepared_data, tmp_path, preset, extra=()):
    """-> (checkpoint dir, model): random weights, perturbed so every norm / bias matters."""
    cfg = tiny_cfg(prepared_data, preset, extra)
    _, info = load_tokenizer(prepared_data / "tokenizer")
    torch.manual_seed(0)
    m = build_model(cfg.model, info)
    with torch.no_grad():  # non-trivial biases / norms so a mapping mistake shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_checkpoint(tmp_path / "run", 5, m, None, {}, to_yaml(cfg), prepared_data / "tokenizer"), m.eval()


def mixed_batch(V, lens=(23, 7, 15), seed=1):
    """Right-padded [B, L] ids (ids >= 5: no specials) and attention mask of mixed lengths."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lens)
    L = int(lens.max())
    mask = (torch.arange(L)[None] < lens[:, None]).long()
    return torch.randint(5, V, (len(lens), L), generator=g) * mask, mask
