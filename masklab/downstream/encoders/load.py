"""Text -> fixed-size embeddings from our checkpoints or any Hugging Face encoder.

`load_encoder(path, pooling=...)` picks the kind from what the directory holds:
- `masklab`: our checkpoint (COMPLETE / config.yaml + model.safetensors) or a run directory
  (latest checkpoint), through `pretrain.load_pretrained`; runs the unpadded path
  (`model.encode(input_ids [T], cu_seqlens [B+1], max_seqlen, position_ids [T]) -> [T, D]`),
  so no padding is ever computed, and pools per sequence with cu_seqlens.
- `hf`: any HF encoder directory (config.json): AutoModel + AutoTokenizer, padded batches
  with an attention mask.
- `masklab-import`: an HF BERT directory converted into our model (`pretrain.import_hf`).

Pooling (`pooling.py`): `cls` (first token), `mean` or `max` over all tokens of a sequence,
special tokens included (what sentence-transformers does). Long inputs are truncated, or split
into chunks that are embedded separately and reduced by `chunk_reduce` (mean or max): the
embedding loop is `encoder_base.Encoder`, the two backends are in `encoder_backends.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from masklab.downstream.encoders.backends import HFEncoder, MaskLabEncoder
from masklab.downstream.encoders.base import Encoder
from masklab.errors import CheckpointError, MaskLabError

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


def load_encoder(path: str | Path, kind: Optional[str] = None, pooling: Optional[str] = None,
                 max_length: Optional[int] = None, normalize: Optional[bool] = None, **kw) -> Encoder:
    """Build an encoder for `path`; `kind` (masklab | hf | masklab-import) overrides detection.
    pooling / max_length / normalize left None come from a sentence-transformers directory's own
    configuration (else mean, the model's maximum, off). Extra keywords: long_mode,
    chunk_reduce, batch_size, device, random_init, seed."""
    from masklab.downstream.encoders.source import resolve_settings

    kind = kind or detect_kind(path)
    if kind not in KINDS:
        raise MaskLabError(f"encoder kind '{kind}' is not one of {', '.join(KINDS)}")
    pooling, max_length, normalize = resolve_settings(path, kind, pooling, max_length, normalize)
    kw.update(pooling=pooling, max_length=max_length, normalize=normalize)
    if kind == "hf":
        return HFEncoder(str(path), **kw)
    return MaskLabEncoder(str(path), imported=kind == "masklab-import", **kw)


def encoder_from_spec(spec: dict, **kw) -> Encoder:
    """Rebuild the encoder a spec describes; refuses a spec without weights_sha256 (it would run
    against whatever model now sits at the path) and weights whose sha256 differs from the spec's."""
    from masklab.downstream.encoders.source import sha256, weights_file

    want = spec.get("weights_sha256")
    if not want:
        raise CheckpointError(f"the encoder spec for {spec.get('path')} has no weights_sha256: nothing ties it to "
                              "the weights it was built with (re-run the command that wrote it)")
    have = sha256(weights_file(spec["path"], "masklab" if spec["kind"] == "masklab" else "hf"))
    if have != want:
        raise CheckpointError(f"the encoder weights at {spec['path']} changed since this bundle was written "
                              f"(sha256 {have[:12]}... vs {want[:12]}...)")
    keys = ("pooling", "max_length", "long_mode", "chunk_reduce", "normalize", "random_init", "seed")
    return load_encoder(spec["path"], kind=spec["kind"], **{k: spec[k] for k in keys if k in spec}, **kw)
