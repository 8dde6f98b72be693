"""Launch grids and pinned tiles of the Triton attention, checked without launching anything.

Grid: batch x heads on axis 0 (2^31 - 1), length blocks on axis 1 (65,535). Before, B x H sat on
axis 1 and 5,462 sequences at 12 heads raised. Pinned rows (`pin_configs`) must hold on GPU too, so
the GPU tests can compare every candidate of every autotune table, not only the winner.
"""
import pytest
import torch

from masklab.kernels import triton_attention_bwd as BWD
from masklab.kernels import triton_attention_fwd as FWD
from masklab.kernels import triton_attention_tiles as T

N_SEQ, H, D = 100_000, 12, 64


class _Recorder:
    """Stands in for an autotuned kernel: records the grid of each launch, runs nothing."""

    def __init__(self, name, block):
        self.name, self.block, self.grids = name, block, []

    def launch(self, grid_fn):
        def run(*args, **kw):
            self.grids.append(grid_fn({"BLOCK_M": self.block, "BLOCK_N": self.block}))
        return run


def test_grid_of_100k_sequences_times_12_heads(monkeypatch):
    """Forward and backward grids for 100k sequences x 12 heads (meta tensors: no memory, no launch)."""
    recs = {n: _Recorder(n, 64) for n in ("fwd", "dkdv", "dq")}
    for mod, attr, name in ((FWD, "FWD", "fwd"), (BWD, "BWD_DKDV", "dkdv"), (BWD, "BWD_DQ", "dq")):
        monkeypatch.setattr(mod, attr, type("Tuned", (), {"__getitem__": lambda self, hc, r=recs[name]: _Grid(r)})())
    monkeypatch.setattr(BWD, "_bwd_preprocess", type("Pre", (), {"__getitem__": lambda self, g: lambda *a, **k: None})())
    T_tok = N_SEQ * 3
    q, k, v = (torch.empty(T_tok, H, D, device="meta") for _ in range(3))
    cu = torch.empty(N_SEQ + 1, dtype=torch.int32, device="meta")
    o, lse = FWD.attention_forward(q, k, v, cu, cu, 3, 0.125, 0, 64)
    BWD.attention_backward(o, q, k, v, o, lse, cu, cu, 3, 3, 0.125, 0, 64, False)
    for name, rec in recs.items():
        assert rec.grids == [(N_SEQ * H, 1)], name
    for row in T.FWD_CONFIGS[64] + T.BWD_DKDV_CONFIGS[64] + T.BWD_DQ_CONFIGS[64]:
        T.check_launch(D, row[0], row[1], N_SEQ * H, 512)  # 1.2M programs on axis 0: within limits
    assert T.attention_grid(N_SEQ * H, 512, 64) == (1_200_000, 8)
    with pytest.raises(ValueError, match="axis 0"):
        T.check_launch(D, 64, 64, 2**31, 64)


class _Grid:
    def __init__(self, rec):
        self.rec = rec

    def __getitem__(self, grid_fn):
        return self.rec.launch(grid_fn)


@pytest.mark.parametrize("interpreting", [False, True])
def test_pinned_rows_hold_on_gpu_and_in_the_interpreter(monkeypatch, interpreting):
    """With the interpreter off (a GPU run), a pinned row replaces the table: one config, no tuning."""
    monkeypatch.setattr(T, "triton_interpreting", lambda: interpreting)
    for name, table in T.TABLES.items():
        tuned = {"fwd": FWD.FWD, "dkdv": BWD.BWD_DKDV, "dq": BWD.BWD_DQ}[name]
        for hc, rows in table.items():
            assert tuned.rows(hc) == ([T.INTERPRET_CONFIG] if interpreting else rows)
            for row in rows:
                with T.pin_configs(**{name: row}):
                    assert tuned.rows(hc) == [row]
                    configs = tuned[hc].configs
                    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                            for c in configs] == [row]
            assert tuned.rows(hc) == ([T.INTERPRET_CONFIG] if interpreting else rows)  # unpinned after
    with pytest.raises(ValueError, match="unknown kernel"):
        with T.pin_configs(fwdd=(64, 64, 4, 1)):
            pass
