"""The check that the padded path (`forward_padded`) gives each sequence what the unpadded path
(`encode`, one sequence alone) gives it, and zeros at the padding."""
import torch


def assert_padded_matches_unpadded(model, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """ids, mask [B, L] right-padded (mask 1 = real token)."""
    with torch.no_grad():
        padded = model.forward_padded(ids, mask)
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            one = model.encode(ids[b, :n], torch.tensor([0, n], dtype=torch.int32), n, torch.arange(n))
            torch.testing.assert_close(padded[b, :n], one, atol=1e-5, rtol=1e-5)
        assert torch.all(padded[mask == 0] == 0)
