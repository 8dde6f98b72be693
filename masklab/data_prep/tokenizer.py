"""Tokenizer training (`tokenizers`) and loading, plus the facts the collator needs.

WordPiece (BERT-style, lowercased, `##` continuation; trained deterministically, see
wordpiece.py) or Unigram (SentencePiece-style `▁`; `tokenizers`' trainer, which is not
deterministic from run to run).
Special tokens always get ids 0..4 in the order of SPECIALS.
"""
from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from masklab.data_prep.wordpiece import count_words, train_wordpiece_vocab
from masklab.errors import DataError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerInfo:
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    special_ids: tuple[int, ...]
    sha256: str

    def to_dict(self) -> dict:
        return {**self.__dict__, "special_ids": list(self.special_ids)}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, kind: str = "wordpiece",
                    min_frequency: int = 2, lowercase: bool = True) -> Tokenizer:
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        vocab = train_wordpiece_vocab(count_words(tok, texts), vocab_size, min_frequency, SPECIALS)
        tok.model = models.WordPiece(vocab, unk_token="[UNK]")
        trainer = None
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="[UNK]",
                                          show_progress=False)
    else:
        raise DataError(f"tokenizer kind '{kind}' is not one of wordpiece, unigram")
    if trainer is not None:
        tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_rust_panic(e: BaseException) -> bool:
    """tokenizers' Rust panics (pyo3's PanicException, a BaseException: `except Exception` misses
    it), e.g. a pre-tokenizer regex hitting Oniguruma's retry limit on some input."""
    return type(e).__name__ == "PanicException"


def panic_error(e: BaseException, tokenizer: str, what: str) -> DataError:
    """One line naming the tokenizer file for a Rust panic."""
    msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return DataError(f"tokenizer {tokenizer} crashed while {what}: {msg} (a pre-tokenizer regex with catastrophic "
                     "backtracking?); use another tokenizer")


def load_tokenizer(path: str | Path) -> tuple[Tokenizer, TokenizerInfo]:
    """`path`: a tokenizer.json file or a directory holding one (ours or an HF model dir)."""
    p = Path(path)
    f = p / TOKENIZER_FILE if p.is_dir() else p
    if not f.is_file():
        raise DataError(f"tokenizer not found: {f} (run `masklab prep` or point --tokenizer at a tokenizer.json)")
    try:
        tok = Tokenizer.from_file(str(f))
    except BaseException as e:  # noqa: B036 (a Rust panic is a BaseException)
        if not (isinstance(e, Exception) or is_rust_panic(e)):
            raise
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load tokenizer {f}: {why}") from None
    # an HF model's tokenizer.json may pad / truncate to a fixed length: prep encodes whole
    # documents and the collator chunks them, so both are always off for encoding
    tok.no_padding()
    tok.no_truncation()
    return tok, tokenizer_info(tok, file_sha256(f))


def tokenizer_info(tok: Tokenizer, sha256: str = "") -> TokenizerInfo:
    def need(name: str) -> int:
        i = tok.token_to_id(name)
        if i is None:
            raise DataError(f"tokenizer has no {name} token; MaskLab needs {', '.join(SPECIALS)}")
        return i

    ids = {n: need(n) for n in SPECIALS}
    if not sha256:
        sha256 = hashlib.sha256(tok.to_str().encode()).hexdigest()
    specials = set(ids.values()) | {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    specials = sorted(int(i) for i in specials)
    return TokenizerInfo(vocab_size=tok.get_vocab_size(), pad_id=ids["[PAD]"], cls_id=ids["[CLS]"],
                         sep_id=ids["[SEP]"], mask_id=ids["[MASK]"], unk_id=ids["[UNK]"],
                         special_ids=tuple(int(i) for i in specials), sha256=sha256)


def save_tokenizer(tok: Tokenizer, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    f = directory / TOKENIZER_FILE
    try:
        tok.save(str(f))
    except Exception as e:  # tokenizers raises a plain Exception, also for a full disk
        if "os error 28" in str(e):
            raise OSError(errno.ENOSPC, "No space left on device", str(f)) from None
        raise
    info = tokenizer_info(tok, file_sha256(f))
    (directory / "tokenizer_info.json").write_text(json.dumps(info.to_dict(), indent=2))
    return f
