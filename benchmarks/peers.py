"""The compared systems, built from ONE set of weights: ours, exported into HF via our mapping.

bert family: HF BertForMaskedLM padded (naive: head on every token), "HF + gather" (HF's
encoder, then `model.cls` on the masked rows only: the strongest plain-HF peer), ours with the
sparse head, ours + sparse last layer. modernbert family: HF ModernBertForMaskedLM with
`sparse_prediction=True`, ours, ours + sparse last layer (only where the last layer is global,
where it is exact). Attention dropout is 0 in all; hidden dropout is matched (bert 0.1,
modernbert 0, its recipe). `parity` runs every system on one batch in eval mode and gives the
relative loss difference to our reference row.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

SIZES = {"micro": dict(hidden_size=64, num_layers=4, num_heads=2, intermediate_size=256),  # tests / --quick
         "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
         "small": dict(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536),
         "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)}
PARITY_TOL = 1e-4  # fp32 relative loss difference above which a row is marked invalid
NAIVE, REF = "HF padded", "ours"  # row-name prefixes: naive baseline, our reference row


@dataclass
class System:
    name: str
    model: torch.nn.Module
    loss: Callable  # (model, UnpaddedBatch, hf_inputs) -> scalar loss (mean over predictions)
    cfg: object  # our model config section (FLOP accounting)
    padded: bool  # runs HF's padded [B, L] input (FLOPs over B x L tokens)
    head_rows: str  # "all" (head on every token) or "masked"


def _ours_loss(model, ub, hf_in):
    out = model(ub)
    return out["loss_sum"] / out["num_predictions"]


def _hf_loss(model, ub, hf_in):
    return model(**hf_in).loss


def _hf_gather_loss(model, ub, hf_in):
    """HF's encoder, then its own MLM head on the masked rows only (three lines a user writes)."""
    h = model.bert(input_ids=hf_in["input_ids"], attention_mask=hf_in["attention_mask"]).last_hidden_state
    sel = hf_in["labels"] != -100
    return F.cross_entropy(model.cls(h[sel]), hf_in["labels"][sel])


def model_config(family: str, size: str, overrides: list[str] = ()):
    from masklab.config import load_config

    s = dict(SIZES[size])
    ov = ["data.shards=unused", f"model.preset={family}"]
    if family == "modernbert":  # ModernBERT's recipe: GeGLU at 1.5x width, no dropout, eps 1e-5
        s["intermediate_size"] = s["hidden_size"] * 3 // 2
        ov += ["model.hidden_dropout=0", "model.layer_norm_eps=1e-5"]
    ov += [f"model.{k}={v}" for k, v in s.items()]
    return load_config(None, ov + list(overrides)).model


def last_layer_exact(mcfg) -> bool:
    return mcfg.preset == "bert" or (mcfg.num_layers - 1) % mcfg.global_attn_every == 0


def build_systems(family: str, size: str, info) -> list[System]:
    """Our model (seeded init) and its peers carrying the same weights."""
    from masklab.pretrain.hf import bert as hf_bert, modernbert as hf_modernbert
    from masklab.pretrain.model import build_model

    torch.manual_seed(0)
    mcfg = model_config(family, size)
    ours = build_model(mcfg, info)
    vocab = ours.vocab_size
    state = ours.state_dict()
    systems = [System("ours (sparse head)", ours, _ours_loss, mcfg, False, "masked")]
    if last_layer_exact(mcfg):
        lcfg = copy.deepcopy(mcfg)
        lcfg.sparse_prediction = "last_layer"
        last = build_model(lcfg, info)
        last.load_state_dict(state)
        systems.append(System("ours + sparse last layer", last, _ours_loss, lcfg, False, "masked"))
    if family == "bert":
        from transformers import BertForMaskedLM

        hcfg = hf_bert.hf_config(mcfg, vocab, info.pad_id)
        hcfg._attn_implementation = "sdpa"
        for name, fn, rows in ((f"{NAIVE} (BertForMaskedLM, head on all tokens)", _hf_loss, "all"),
                               ("HF + gather (encoder, then cls on masked rows)", _hf_gather_loss, "masked")):
            hf = BertForMaskedLM(hcfg)
            hf.load_state_dict(hf_bert.to_hf_state_dict(state, mcfg.num_layers))
            systems.append(System(name, hf, fn, mcfg, True, rows))
    else:
        from transformers import ModernBertForMaskedLM

        cls_id, sep_id = info.cls_id, info.sep_id
        hcfg = hf_modernbert.hf_config(mcfg, vocab, info.pad_id, cls_id, sep_id)
        hcfg.sparse_prediction = True
        hcfg._attn_implementation = "sdpa"
        hf = ModernBertForMaskedLM(hcfg)
        hf.load_state_dict(hf_modernbert.to_hf_state_dict(state, mcfg.num_layers))
        systems.append(System("HF ModernBertForMaskedLM (sdpa, sparse_prediction)", hf, _hf_loss, mcfg, True,
                              "masked"))
    return systems


def strongest_peer(systems: list[System]) -> str:
    """The HF row to beat: HF + gather (bert) or HF ModernBERT with sparse prediction."""
    return next(s.name for s in systems if s.padded and s.head_rows == "masked")


@torch.no_grad()
def parity(systems: list[System], ub, hf_in) -> dict[str, float]:
    """Eval-mode (no dropout) loss of every system on one batch -> relative difference to ours."""
    losses = {}
    for s in systems:
        s.model.eval()
        losses[s.name] = float(s.loss(s.model, ub, hf_in))
        s.model.train()
    ref = losses[systems[0].name]
    return {k: abs(v - ref) / abs(ref) for k, v in losses.items()}


def executed_flops(s: System, vocab: int, ub, hf_in) -> float:
    """Matmul FLOPs of fwd + bwd (3x fwd) that system `s` executes on this batch: padded systems
    over B x L tokens; the head over every token or the masked ones; the sparse last layer's
    queries, output projection and MLP over the masked rows only. Windowed layers are counted
    at full length (what both sides compute today)."""
    c = s.cfg
    d, i, nl = c.hidden_size, c.intermediate_size, c.num_layers
    lens = (ub.cu_seqlens[1:] - ub.cu_seqlens[:-1]).double()
    if s.padded:
        lens = torch.full_like(lens, hf_in["input_ids"].shape[1])
    T, M = float(lens.sum()), float(ub.num_predictions)
    mlp = (3 if c.preset == "modernbert" else 2) * d * i
    per_tok = 4 * d * d + mlp  # qkv + out projection + MLP, multiply-adds per token
    sq = float((lens ** 2).sum())
    if c.sparse_prediction == "last_layer":
        m_lens = (ub.mlm_cu_seqlens[1:] - ub.mlm_cu_seqlens[:-1]).double()
        dense = (nl - 1) * T * per_tok + T * 2 * d * d + M * (2 * d * d + mlp)
        attn = (nl - 1) * 2 * d * sq + 2 * d * float((m_lens * lens).sum())
    else:
        dense, attn = nl * T * per_tok, nl * 2 * d * sq
    head = (T if s.head_rows == "all" else M) * (d * d + d * vocab)
    return 3.0 * 2.0 * (dense + attn + head)
