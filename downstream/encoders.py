"""Text -> fixed-size embeddings from our checkpoints or any Hugging Face encoder.

`load_encoder(path, pooling=...)` picks the kind from what the directory holds:
- `masklab`: our checkpoint (COMPLETE / config.yaml + model.safetensors) or a run directory
  (latest checkpoint), through `pretrain.load_pretrained`; runs the unpadded path
  (`model.encode(input_ids [T], cu_seqlens [B+1], max_seqlen, position_ids [T]) -> [T, D]`),
  so no padding is ever computed, and pools per sequence with cu_seqlens.
- `hf`: any HF encoder directory (config.json): AutoModel + AutoTokenizer, padded batches
  with an attention mask.
- `masklab-import`: an HF BERT directory converted into our model (`pretrain.import_hf`).

Pooling: `cls` (first token), `mean` or `max` over all tokens of a sequence, special tokens
included (what sentence-transformers does). Long inputs are truncated, or split into chunks
that are embedded separately and reduced by `chunk_reduce` (mean or max).
"""
from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from masklab.errors import CheckpointError, MaskLabError

log = logging.getLogger("masklab.downstream")
POOLINGS = ("cls", "mean", "max")
KINDS = ("masklab", "hf", "masklab-import")


def detect_kind(path: str | Path) -> str:
    """'masklab' for our checkpoints / run dirs, 'hf' for a Hugging Face model directory."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"model path {p} is not a directory")
    if (p / "COMPLETE").is_file() or (p / "masklab.json").is_file() or (p / "checkpoints").is_dir() or \
            ((p / "config.yaml").is_file() and (p / "model.safetensors").is_file()):
        return "masklab"
    if (p / "config.json").is_file():
        return "hf"
    found = ", ".join(sorted(x.name for x in p.iterdir())[:10]) or "nothing"
    raise CheckpointError(f"{p} is neither a MaskLab checkpoint (config.yaml + model.safetensors) nor a "
                          f"Hugging Face model directory (config.json); it holds: {found}")


def pool_padded(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """h [B, L, D], mask [B, L] (1 = real token) -> [B, D]."""
    if pooling == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    if pooling == "mean":
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    return h.masked_fill(m == 0, float("-inf")).amax(1)


def pool_unpadded(h: torch.Tensor, cu_seqlens: torch.Tensor, pooling: str) -> torch.Tensor:
    """h [T, D] (sequences concatenated), cu_seqlens int32 [B+1] -> [B, D]."""
    cu = cu_seqlens.long()
    if pooling == "cls":
        return h.index_select(0, cu[:-1])
    lens = cu[1:] - cu[:-1]
    seg = torch.repeat_interleave(torch.arange(len(lens), device=h.device), lens)  # [T] -> sequence index
    out = torch.zeros(len(lens), h.shape[1], dtype=h.dtype, device=h.device)
    if pooling == "mean":
        return out.index_add_(0, seg, h) / lens.unsqueeze(1).to(h.dtype)
    return out.scatter_reduce_(0, seg.unsqueeze(1).expand_as(h), h, reduce="amax", include_self=False)


class Encoder(abc.ABC):
    """Base: tokenisation into chunks, length-sorted batching, pooling, chunk reduction.

    Subclasses implement `_content_ids(texts)` (ids without special tokens), `_wrap(ids)`
    (add [CLS]/[SEP] or the model's equivalent) and `_embed(seqs) -> [b, D]`.
    """

    kind = ""

    def __init__(self, path: str, pooling: str = "mean", max_length: Optional[int] = None,
                 long_mode: str = "truncate", chunk_reduce: str = "mean", batch_size: int = 32,
                 device: Optional[str] = None, normalize: bool = False, random_init: bool = False, seed: int = 0):
        if pooling not in POOLINGS:
            raise MaskLabError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
        if long_mode not in ("truncate", "chunk") or chunk_reduce not in ("mean", "max"):
            raise MaskLabError("long_mode must be truncate|chunk and chunk_reduce mean|max")
        self.path, self.pooling, self.long_mode, self.chunk_reduce = str(path), pooling, long_mode, chunk_reduce
        self.batch_size, self.normalize, self.random_init, self.seed = batch_size, bool(normalize), random_init, seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_length = max_length  # resolved against the model by subclasses
        self.dim = 0

    # -- subclass hooks -------------------------------------------------------------
    @abc.abstractmethod
    def _content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""

    @abc.abstractmethod
    def _wrap(self, ids: list[int]) -> list[int]:
        """Ids with the model's special tokens around them."""

    def _num_special(self) -> int:
        return len(self._wrap([]))

    @abc.abstractmethod
    def _embed(self, seqs: list[list[int]]) -> torch.Tensor:
        """Pooled embeddings [len(seqs), dim] fp32 of already-wrapped sequences."""

    # -- public -----------------------------------------------------------------------
    def spec(self) -> dict:
        """Everything needed to rebuild this encoder exactly (stored in meta.json and bundles):
        the resolved weights file and its sha256, random_init + seed, and every embedding setting."""
        from masklab.downstream.encoder_source import sha256, weights_file

        w = weights_file(self.path, "masklab" if self.kind == "masklab" else "hf")
        return {"kind": self.kind, "path": str(Path(self.path).resolve()), "weights": str(w.resolve()),
                "weights_sha256": sha256(w), "random_init": self.random_init, "seed": self.seed,
                "pooling": self.pooling, "max_length": self.max_length, "long_mode": self.long_mode,
                "chunk_reduce": self.chunk_reduce, "normalize": self.normalize}

    def chunks(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """-> (token id sequences with special tokens, owner [n_chunks] = index of the text)."""
        cap = self.max_length - self._num_special()
        seqs, owner = [], []
        for i, ids in enumerate(self._content_ids(list(texts))):
            if self.long_mode == "truncate" or len(ids) <= cap:
                pieces = [ids[:cap]]
            else:
                pieces = [ids[s:s + cap] for s in range(0, len(ids), cap)]
            seqs += [self._wrap(p) for p in pieces]
            owner += [i] * len(pieces)
        return seqs, np.asarray(owner, dtype=np.int64)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """N texts -> float32 [N, D]. Batches are formed by length (less padding), order restored."""
        from tqdm.auto import tqdm

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        seqs, owner = self.chunks(texts)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        pooled = np.zeros((len(seqs), self.dim), dtype=np.float32)
        starts = range(0, len(seqs), self.batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc=f"embed ({self.kind})", disable=not progress, unit="batch"):
                idx = order[s:s + self.batch_size]
                pooled[idx] = self._embed([seqs[i] for i in idx]).float().cpu().numpy()
        out = self._reduce_chunks(pooled, owner, len(texts))
        if self.normalize:  # unit rows, as a sentence-transformers Normalize module
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise MaskLabError(f"embeddings of {int(bad.sum())} of {len(texts)} inputs are NaN/inf (first: row "
                               f"{int(np.argmax(bad))}); the model at {self.path} looks diverged or corrupted")
        return out

    def _reduce_chunks(self, pooled: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
        if len(owner) == n:  # one chunk per text
            return pooled
        out = np.zeros((n, pooled.shape[1]), dtype=np.float32)
        if self.chunk_reduce == "mean":
            np.add.at(out, owner, pooled)
            return out / np.bincount(owner, minlength=n)[:, None]
        out[:] = -np.inf
        np.maximum.at(out, owner, pooled)
        return out


class HFEncoder(Encoder):
    """transformers AutoModel + AutoTokenizer; padded batches with an attention mask."""

    kind = "hf"

    def __init__(self, path: str, random_init: bool = False, seed: int = 0, **kw):
        super().__init__(path, random_init=random_init, seed=seed, **kw)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from masklab.downstream.encoder_source import require_safetensors

        if not random_init:
            require_safetensors(path)
        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            if random_init:
                torch.manual_seed(seed)
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(path))
            else:
                self.model = AutoModel.from_pretrained(path, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load a Hugging Face encoder from {path}: {e}") from None
        self.model.to(self.device).eval()
        cfg = self.model.config
        vocab = getattr(cfg, "vocab_size", None)
        if vocab is not None and len(self.tok) > vocab:
            raise CheckpointError(f"{path}: tokenizer has {len(self.tok)} tokens but the model's vocabulary is {vocab}")
        limit = min(getattr(cfg, "max_position_embeddings", 512), self.tok.model_max_length or 10**9)
        self.max_length = min(self.max_length or limit, limit)
        self.dim = cfg.hidden_size
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.prefix, self.suffix = self._special_template()

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before/after a single sequence ([CLS] ... [SEP] for BERT),
        read off a probe encoding: works whatever the tokenizer API version offers."""
        probe = "hello world"
        with_sp = self.tok(probe, add_special_tokens=True)["input_ids"]
        bare = self.tok(probe, add_special_tokens=False)["input_ids"]
        for i in range(len(with_sp) - len(bare) + 1):
            if with_sp[i:i + len(bare)] == bare:
                return with_sp[:i], with_sp[i + len(bare):]
        raise CheckpointError(f"{self.path}: cannot tell where the tokenizer puts its special tokens")

    def _content_ids(self, texts):
        # no truncation here: chunking needs the full sequence (a length warning may be logged)
        return self.tok(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def _wrap(self, ids):
        return [*self.prefix, *ids, *self.suffix]

    def _embed(self, seqs):
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
        return pool_padded(h, mask, self.pooling)


class MaskLabEncoder(Encoder):
    """Our model on the unpadded path: sequences concatenated, cu_seqlens, no padding at all."""

    kind = "masklab"

    def __init__(self, path: str, imported: bool = False, random_init: bool = False, seed: int = 0, **kw):
        super().__init__(path, random_init=random_init, seed=seed, **kw)
        from masklab import pretrain
        from masklab.data_prep.tokenizer import tokenizer_info

        if imported:
            self.kind = "masklab-import"
            model, tok, cfg = pretrain.import_hf(path)
        else:
            model, tok, cfg = pretrain.load_pretrained(path)
        if random_init:  # same architecture and tokenizer, fresh weights: the "what pretraining buys" baseline
            torch.manual_seed(seed)
            model = pretrain.build_model(cfg.model, tokenizer_info(tok))
        self.model = model.to(self.device).eval()
        if tok.get_vocab_size() > model.vocab_size:
            raise CheckpointError(f"{path}: tokenizer has {tok.get_vocab_size()} tokens but the model's vocabulary "
                                  f"is {model.vocab_size}; the checkpoint and tokenizer do not belong together")
        self.vocab_size = model.vocab_size
        # a copy without the padding/truncation an HF tokenizer.json may carry: we chunk ourselves
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tok.to_str())
        self.tok.no_padding()
        self.tok.no_truncation()
        self.cls_id, self.sep_id = self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]")
        if self.cls_id is None or self.sep_id is None:
            raise CheckpointError(f"{path}: tokenizer has no [CLS]/[SEP] token")
        limit = int(cfg.model.max_position_embeddings)
        self.max_length = min(self.max_length or limit, limit)
        self.dim = int(cfg.model.hidden_size)

    def _content_ids(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def _wrap(self, ids):
        return [self.cls_id, *ids, self.sep_id]

    def _embed(self, seqs):
        lens = torch.tensor([len(s) for s in seqs], dtype=torch.int32)
        ids = torch.tensor([t for s in seqs for t in s], dtype=torch.int64)
        if int(ids.max()) >= self.vocab_size:
            raise CheckpointError(f"{self.path}: token id {int(ids.max())} >= model vocabulary {self.vocab_size}")
        cu = torch.zeros(len(seqs) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(lens, 0)
        pos = torch.cat([torch.arange(n, dtype=torch.int64) for n in lens.tolist()])
        d = self.device
        h = self.model.encode(ids.to(d), cu.to(d), int(lens.max()), pos.to(d))  # [T, D]
        return pool_unpadded(h, cu.to(d), self.pooling)


def load_encoder(path: str | Path, kind: Optional[str] = None, pooling: Optional[str] = None,
                 max_length: Optional[int] = None, normalize: Optional[bool] = None, **kw) -> Encoder:
    """Build an encoder for `path`; `kind` (masklab | hf | masklab-import) overrides detection.
    pooling / max_length / normalize left None come from a sentence-transformers directory's own
    configuration (else mean, the model's maximum, off). Extra keywords: long_mode,
    chunk_reduce, batch_size, device, random_init, seed."""
    from masklab.downstream.encoder_source import resolve_settings

    kind = kind or detect_kind(path)
    if kind not in KINDS:
        raise MaskLabError(f"encoder kind '{kind}' is not one of {', '.join(KINDS)}")
    pooling, max_length, normalize = resolve_settings(path, kind, pooling, max_length, normalize)
    kw.update(pooling=pooling, max_length=max_length, normalize=normalize)
    if kind == "hf":
        return HFEncoder(str(path), **kw)
    return MaskLabEncoder(str(path), imported=kind == "masklab-import", **kw)


def encoder_from_spec(spec: dict, **kw) -> Encoder:
    """Rebuild the encoder a spec describes; refuses weights whose sha256 differs from the spec's."""
    from masklab.downstream.encoder_source import sha256, weights_file

    keys = ("pooling", "max_length", "long_mode", "chunk_reduce", "normalize", "random_init", "seed")
    enc = load_encoder(spec["path"], kind=spec["kind"], **{k: spec[k] for k in keys if k in spec}, **kw)
    want = spec.get("weights_sha256")
    if want is not None:
        have = sha256(weights_file(spec["path"], "masklab" if spec["kind"] == "masklab" else "hf"))
        if have != want:
            raise CheckpointError(f"the encoder weights at {spec['path']} changed since this bundle was written "
                                  f"(sha256 {have[:12]}... vs {want[:12]}...)")
    return enc
