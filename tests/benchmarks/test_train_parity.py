"""The throughput benchmark's honesty checks: every compared system computes our loss on our
weights (parity within 1e-4), the check flags a peer that does not, and --quick runs."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import peers, texts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cell():
    return texts.build_cell(texts.tokenizer(), "pydoc", "paragraphs", n_batches=1)


@pytest.fixture(scope="module", params=["bert", "modernbert"])
def systems(request, cell):
    return peers.build_systems(request.param, "micro", cell.info)


def test_every_system_matches_our_loss(cell, systems):
    names = [s.name for s in systems]
    assert peers.strongest_peer(systems) in names and any("sparse last layer" in n for n in names)
    rel = peers.parity(systems, *cell.batches[0])
    assert all(v <= peers.PARITY_TOL for v in rel.values()), rel


def test_parity_flags_a_peer_on_its_own_weights(cell, systems):
    """The old benchmark's HF model had its own init: the check must catch that."""
    peer = next(s for s in systems if s.name == peers.strongest_peer(systems))
    own = copy.deepcopy(peer)
    torch.manual_seed(1)
    own.model = type(peer.model)(peer.model.config)
    assert peers.parity([systems[0], own], *cell.batches[0])[own.name] > peers.PARITY_TOL


def _embedding(m) -> torch.Tensor:
    if hasattr(m, "get_input_embeddings"):  # HF
        return m.get_input_embeddings().weight
    e = m.embeddings
    return (e.word_embeddings if hasattr(e, "word_embeddings") else e.tok_embeddings).weight


def test_peers_share_weights_and_dropout(systems):
    ours = _embedding(systems[0].model)
    for s in systems[1:]:
        w = _embedding(s.model)
        assert torch.equal(w, ours) and w.data_ptr() != ours.data_ptr()  # same values, own copy (own optimizer)
        if s.padded:
            c = s.model.config
            assert getattr(c, "attention_probs_dropout_prob", getattr(c, "attention_dropout", None)) == 0


def test_quick_run_writes_parity_and_targets(tmp_path):
    out = tmp_path / "t.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "HF + gather" in text and "sparse_prediction" in text and "chunks512" in text
    assert "INVALID" not in text and "target >= 1.15x" in text
