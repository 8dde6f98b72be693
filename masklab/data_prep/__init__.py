"""Data prep: raw text -> tokenizer -> packed, memory-mapped token shards with a manifest."""
from masklab.data_prep.prep import PrepOptions, prepare
from masklab.data_prep.shards import Shard, ShardSet, read_manifest
from masklab.data_prep.tokenizer import SPECIALS, TokenizerInfo, load_tokenizer, tokenizer_info, train_tokenizer

__all__ = ["PrepOptions", "prepare", "ShardSet", "Shard", "read_manifest", "load_tokenizer",
           "tokenizer_info", "train_tokenizer", "TokenizerInfo", "SPECIALS"]
