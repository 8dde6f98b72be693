"""Encoders: our checkpoints (unpadded path) vs transformers, pooling, batching, chunking, errors."""
import shutil

import numpy as np
import pytest
import torch

from masklab.downstream.encoders.load import detect_kind, load_encoder
from masklab.downstream.encoders.pooling import pool_padded, pool_unpadded
from masklab.errors import CheckpointError, MaskLabError

from .toydata import BAD, GOOD

TEXTS = BAD + GOOD + ["", "ignore " * 80]  # an empty text and one longer than the tiny model's 64 positions


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_our_checkpoint_matches_transformers(tiny_bert_dir, tiny_ckpt, pooling):
    ref = load_encoder(tiny_bert_dir, pooling=pooling, batch_size=4).encode(TEXTS)  # AutoModel, padded
    ours = load_encoder(tiny_ckpt, pooling=pooling, batch_size=4).encode(TEXTS)  # our model, unpadded
    run_dir = load_encoder(tiny_ckpt.parent.parent, pooling=pooling).encode(TEXTS)  # run dir -> latest
    assert ours.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(run_dir, ours, atol=1e-6)  # other batch size: other summation order


def test_detect_kind(tiny_bert_dir, tiny_ckpt, tmp_path):
    assert detect_kind(tiny_ckpt) == "masklab" and detect_kind(tiny_ckpt.parent.parent) == "masklab"
    assert detect_kind(tiny_bert_dir) == "hf"
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CheckpointError, match="holds: x.txt"):
        detect_kind(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        detect_kind(tmp_path / "nope")


def test_length_batching_restores_order(tiny_ckpt):
    enc = load_encoder(tiny_ckpt, pooling="mean", batch_size=3)
    together = enc.encode(TEXTS)
    alone = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_unpadded_pooling_equals_padded():
    g = torch.Generator().manual_seed(0)
    lens = [5, 1, 3]
    h = torch.randn(sum(lens), 4, generator=g)
    cu = torch.tensor([0, 5, 6, 9], dtype=torch.int32)
    padded = torch.zeros(3, 5, 4)
    mask = torch.zeros(3, 5, dtype=torch.long)
    for i, (a, n) in enumerate(zip(cu[:-1].tolist(), lens)):
        padded[i, :n], mask[i, :n] = h[a:a + n], 1
    for p in ("cls", "mean", "max"):
        torch.testing.assert_close(pool_unpadded(h, cu, p), pool_padded(padded, mask, p))


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_long_inputs_chunk(tiny_ckpt, reduce):
    enc = load_encoder(tiny_ckpt, pooling="mean", max_length=8, long_mode="chunk", chunk_reduce=reduce)
    text = BAD[0] + " " + GOOD[0]  # 16 word pieces -> 3 chunks of 6 (+ [CLS], [SEP])
    seqs, owner = enc.chunks([text])
    assert len(seqs) == 3 and owner.tolist() == [0, 0, 0] and all(len(s) <= 8 for s in seqs)
    with torch.no_grad():
        parts = enc._embed(seqs).numpy()
    expect = parts.mean(0) if reduce == "mean" else parts.max(0)
    np.testing.assert_allclose(enc.encode([text])[0], expect, atol=1e-6)
    trunc = load_encoder(tiny_ckpt, pooling="mean", max_length=8).encode([text])[0]
    np.testing.assert_allclose(trunc, parts[0], atol=1e-6)  # truncation keeps the first chunk


def test_tokenizer_larger_than_model_vocab_is_refused(tiny_ckpt, tmp_path):
    from tokenizers import Tokenizer

    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    tok = Tokenizer.from_file(str(ck / "tokenizer" / "tokenizer.json"))
    tok.add_tokens([f"extra{i}" for i in range(200)])
    tok.save(str(ck / "tokenizer" / "tokenizer.json"))
    with pytest.raises(MaskLabError, match="vocab"):
        load_encoder(ck).encode(["hello"])


def test_nan_weights_give_a_clear_error_and_no_output(tiny_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    from masklab.downstream.data.labelled import LabelledData
    from masklab.downstream.pipeline import embed

    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    w = load_file(str(ck / "model.safetensors"))
    w["embeddings.LayerNorm.weight"][:] = float("nan")
    save_file(w, str(ck / "model.safetensors"))
    data = LabelledData(BAD + GOOD, np.array([1] * len(BAD) + [0] * len(GOOD)), "toy")
    with pytest.raises(MaskLabError, match="NaN|sha256 does not match"):  # the integrity check sees the edit first
        embed(str(ck), data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_random_init_baseline_differs(tiny_bert_dir):
    a = load_encoder(tiny_bert_dir, kind="masklab-import").encode(GOOD)
    b = load_encoder(tiny_bert_dir, kind="masklab-import", random_init=True, seed=1).encode(GOOD)
    assert a.shape == b.shape and not np.allclose(a, b)


def test_minilm_defaults_follow_sentence_transformers_config_long_inputs_too(minilm):
    st = pytest.importorskip("sentence_transformers")
    from masklab.downstream.data.labelled import load_bastion

    texts = load_bastion().texts
    long = [" ".join(texts[:40]), " ".join(texts[40:90])]  # > 256 tokens: truncated at max_seq_length
    full = st.SentenceTransformer(str(minilm), device="cpu")
    ref = full.encode(texts[:6] + long, convert_to_numpy=True)  # with its Normalize module
    for kind in ("hf", "masklab-import"):
        enc = load_encoder(minilm, kind=kind)
        assert (enc.pooling, enc.max_length, enc.normalize) == ("mean", full.max_seq_length, True)
        ours = enc.encode(texts[:6] + long)
        cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.9999, (kind, cos)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    over = load_encoder(minilm, kind="hf", pooling="cls", max_length=512, normalize=False)
    assert (over.pooling, over.max_length, over.normalize) == ("cls", 512, False)


def test_spec_records_weights_hash_and_random_init(tiny_bert_dir, tiny_ckpt, tmp_path):
    import shutil

    from masklab.downstream.encoders.load import encoder_from_spec
    from masklab.errors import CheckpointError

    spec = load_encoder(tiny_bert_dir, kind="masklab-import", random_init=True, seed=3).spec()
    assert spec["random_init"] is True and spec["seed"] == 3 and len(spec["weights_sha256"]) == 64
    again = encoder_from_spec(spec)  # rebuilt as the random twin, not the pretrained weights
    np.testing.assert_array_equal(again.encode(GOOD), load_encoder(tiny_bert_dir, kind="masklab-import",
                                                                   random_init=True, seed=3).encode(GOOD))
    assert not np.allclose(again.encode(GOOD), load_encoder(tiny_bert_dir, kind="masklab-import").encode(GOOD))
    ck = load_encoder(tiny_ckpt).spec()
    assert ck["weights"].endswith("model.safetensors") and ck["random_init"] is False
    d = tmp_path / "hf"
    shutil.copytree(tiny_bert_dir, d)
    spec = load_encoder(d, kind="hf").spec()
    from safetensors.torch import load_file, save_file

    w = load_file(str(d / "model.safetensors"))
    save_file({k: v + 1 for k, v in w.items()}, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="changed since this bundle was written"):
        encoder_from_spec(spec)


def test_pickled_only_hf_dir_is_refused_without_unpickling_advice(tiny_bert_dir, tmp_path):
    import shutil

    from masklab.errors import CheckpointError

    d = tmp_path / "bin_only"
    shutil.copytree(tiny_bert_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickled weights") as e:
        load_encoder(d, kind="hf")
    assert "weights_only" not in str(e.value)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from masklab.downstream.data.labelled import load_bastion

    texts = load_bastion().texts[:12]
    full = st.SentenceTransformer(str(minilm), device="cpu")
    # transformer + mean pooling, without the final Normalize module
    ref = st.SentenceTransformer(modules=[full[0], full[1]], device="cpu").encode(texts, convert_to_numpy=True)
    ours = load_encoder(minilm, kind="hf", pooling="mean", max_length=full.max_seq_length, normalize=False).encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
