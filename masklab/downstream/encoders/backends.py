"""The two encoder backends: any Hugging Face encoder (AutoModel, padded batches with an attention
mask) and our model on the unpadded path
(`model.encode(input_ids [T], cu_seqlens [B+1], max_seqlen, position_ids [T]) -> [T, D]`: no
padding is ever computed; pooling per sequence with cu_seqlens)."""
from __future__ import annotations

from pathlib import Path

import torch

from masklab.downstream.encoders.base import Encoder
from masklab.downstream.encoders.pooling import pool_padded, pool_unpadded
from masklab.errors import CheckpointError


class HFEncoder(Encoder):
    """transformers AutoModel + AutoTokenizer; padded batches with an attention mask."""

    kind = "hf"

    def __init__(self, path: str, random_init: bool = False, seed: int = 0, **kw):
        super().__init__(path, random_init=random_init, seed=seed, **kw)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from masklab.downstream.encoders.source import require_safetensors
        from masklab.pretrain.hf.safety import refuse_custom_code
        from masklab.pretrain.model.memory import check_hf_config_fits, check_weights_match, stored_params

        refuse_custom_code(path)
        if not random_init:
            require_safetensors(path)
        try:
            self.tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            if not random_init:  # a 1 KB config.json beside tiny weights must not build a huge model
                check_weights_match(config, path, stored_params(sorted(Path(path).glob("*.safetensors"))))
            check_hf_config_fits(config, path, training=False, device=self.device)
            if random_init:
                torch.manual_seed(seed)
                self.model = AutoModel.from_config(config, trust_remote_code=False)
            else:
                self.model = AutoModel.from_pretrained(path, config=config, use_safetensors=True,
                                                       trust_remote_code=False)
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
