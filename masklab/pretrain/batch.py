"""`UnpaddedBatch`: the one batch contract from collator to loss.

Built on CPU by the collator; the GPU never needs `.item()` or boolean indexing to use it.
All index tensors refer to the packed token axis [T] (sequences concatenated, no padding).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch


@dataclass
class UnpaddedBatch:
    input_ids: torch.Tensor  # int64 [T] corrupted inputs ([MASK]/random/kept at predicted slots)
    position_ids: torch.Tensor  # int64 [T] position within its sequence
    cu_seqlens: torch.Tensor  # int32 [B+1]
    max_seqlen: int
    mlm_positions: torch.Tensor  # int64 [M] sorted indices into [T] of tokens to predict
    mlm_labels: torch.Tensor  # int64 [M] original ids (the collator never pads M; the loss ignores -100)
    num_predictions: int  # M
    mlm_cu_seqlens: torch.Tensor  # int32 [B+1] predictions per sequence (sparse last layer)
    max_mlm_seqlen: int
    sample_index: torch.Tensor  # int64 [B] global sample ids (resume / no-repeat checks)
    step: int  # optimizer step that consumes this batch
    mask_rate: float  # the scheduled rate used for this batch
    num_maskable: int  # tokens that could have been masked (realised rate = num_predictions / this)
    # late-mask insertion (Mask More and Mask Later); None in `input` mode
    visible_index: Optional[torch.Tensor] = None  # int64 [T_vis] sorted: tokens layers < k see
    insert_positions: Optional[torch.Tensor] = None  # int64 [T_ins] sorted: slots that get [MASK] at layer k
    cu_seqlens_visible: Optional[torch.Tensor] = None  # int32 [B+1]
    max_seqlen_visible: int = 0
    # Token Dropping (model.token_drop.rate > 0, training batches): counted on the host by the collator so
    # the device never has to report how many rows remain (model/token_drop.py)
    drop_counts: Optional[torch.Tensor] = None  # int64 [B] rows each sequence drops
    num_kept: int = 0  # T - drop_counts.sum()
    max_seqlen_kept: int = 0

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.cu_seqlens.shape[0]) - 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "UnpaddedBatch":
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return UnpaddedBatch(**kw)

    def pin_memory(self) -> "UnpaddedBatch":
        kw = {f.name: (getattr(self, f.name).pin_memory() if isinstance(getattr(self, f.name), torch.Tensor)
                       else getattr(self, f.name)) for f in fields(self)}
        return UnpaddedBatch(**kw)
