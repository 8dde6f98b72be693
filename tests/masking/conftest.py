"""Shared fixtures of the masking tests: a PMI table and an InforMask weight table for the
session's small prepared corpus, and a Collator factory."""
import numpy as np
import pytest

from masklab.data_prep import ShardSet
from masklab.config import load_config
from masklab.pretrain.data.collator import Collator


@pytest.fixture(scope="session")
def pmi_table(prepared_data, tmp_path_factory):
    from masklab.data_prep.pmi import build_pmi_table

    out = tmp_path_factory.mktemp("pmi") / "table"
    build_pmi_table(str(prepared_data), str(out), min_count=2, size=600, progress=False)
    return out


@pytest.fixture(scope="session")
def weights_table(prepared_data, tmp_path_factory):
    from masklab.data_prep.weights import build_token_weights

    out = tmp_path_factory.mktemp("informask") / "weights"
    build_token_weights(str(prepared_data), str(out))
    return out


def make_collator(data, *ov, pmi=None, weights=None, seq_len=128):
    extra = [f"masking.pmi_table={pmi}"] if pmi else []
    extra += [f"masking.informask_weights={weights}"] if weights else []
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={data}", f"data.seq_len={seq_len}", *extra, *ov])
    return Collator(cfg, ShardSet(data, "train"))


def batch_units(c, ids, step):
    """Unit id per token of the batch the collator builds for (ids, step): the same flat input."""
    rows = c.sample_ids(int(ids[0]), len(ids))
    toks, bits, lens = c.flat_tokens(rows)
    return toks, lens, c.masker.unit_ids(toks, bits, lens, np.asarray(ids), c.seed, step)
