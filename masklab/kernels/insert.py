"""Late-mask insertion (Mask More and Mask Later): the PyTorch reference.

The visible stream [T_vis, D] is scattered into the full stream [T, D]; the insert slots
get `mask_rows` [T_ins, D], which the model computes as exactly what its embedding layer
outputs for [MASK] at each slot's position (LayerNorm included). Backward is the gather.
"""
from __future__ import annotations

import torch

from masklab.kernels.rows import check_index


def check_insert_args(visible, visible_index, insert_positions, mask_rows, total_tokens) -> None:
    if visible.dim() != 2 or mask_rows.dim() != 2 or visible.shape[1] != mask_rows.shape[1]:
        raise ValueError(f"visible {tuple(visible.shape)} and mask_rows {tuple(mask_rows.shape)} must be [*, D]")
    if visible.dtype != mask_rows.dtype or visible.device != mask_rows.device:
        raise TypeError("visible and mask_rows must share dtype and device")
    if visible_index.shape[0] != visible.shape[0] or insert_positions.shape[0] != mask_rows.shape[0]:
        raise ValueError("index lengths must match their rows")
    if visible.shape[0] + mask_rows.shape[0] != total_tokens:
        raise ValueError(f"{visible.shape[0]} visible + {mask_rows.shape[0]} inserted != {total_tokens} total tokens")
    check_index(visible_index, total_tokens, "visible_index")
    check_index(insert_positions, total_tokens, "insert_positions")


def insert_masks_torch(visible: torch.Tensor, visible_index: torch.Tensor, insert_positions: torch.Tensor,
                       mask_rows: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """-> full [total_tokens, D]; visible_index and insert_positions partition range(T)."""
    check_insert_args(visible, visible_index, insert_positions, mask_rows, total_tokens)
    index = torch.cat([visible_index, insert_positions]).long()
    src = torch.cat([visible, mask_rows])
    return src.new_zeros(total_tokens, src.shape[1]).index_copy(0, index, src)
