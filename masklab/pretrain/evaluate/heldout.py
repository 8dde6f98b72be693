"""MLM evaluation at a fixed masking rate and seed, so runs with different schedules compare."""
from __future__ import annotations

import torch

from masklab.pretrain.batch import UnpaddedBatch


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches: list[UnpaddedBatch], device: torch.device,
                     autocast=None) -> dict:
    """-> {loss, mlm_acc, unigram_acc, predictions}: mean loss / masked-token accuracy over all
    predictions, and the accuracy of always guessing the most frequent label (the floor)."""
    was_training = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    counts: dict[int, int] = {}
    try:
        for b in batches:
            b = b.to(device)
            if autocast is not None:
                with autocast:
                    out = model(b)
            else:
                out = model(b)
            loss += float(out["loss_sum"])
            correct += int(out["n_correct"])
            n += int(out["num_predictions"])
            for t, c in zip(*torch.unique(b.mlm_labels[b.mlm_labels >= 0].cpu(), return_counts=True)):
                counts[int(t)] = counts.get(int(t), 0) + int(c)
    finally:
        model.train(was_training)
    n = max(n, 1)
    return {"loss": loss / n, "mlm_acc": correct / n, "unigram_acc": max(counts.values(), default=0) / n,
            "predictions": n}
