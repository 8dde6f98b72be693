"""What an encoder directory says about itself: its weights (file, sha256, safetensors only)
and, for a sentence-transformers model, how it embeds (pooling, max_seq_length, normalisation).

sentence-transformers directory: modules.json lists the modules in order (Transformer,
Pooling at e.g. 1_Pooling/config.json, optionally Normalize); sentence_bert_config.json holds
max_seq_length (tokens incl. specials; longer inputs are truncated).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from masklab.data_prep.tokenizer import file_sha256
from masklab.errors import CheckpointError

log = logging.getLogger("masklab.downstream")
_ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def require_safetensors(path: str | Path) -> None:
    """HF directories must carry safetensors weights and no custom code (`auto_map`): pickled .bin
    files and a folder's own Python are never loaded."""
    from masklab.pretrain.hf.safety import refuse_custom_code

    p = Path(path)
    refuse_custom_code(p)
    if any(p.glob("*.safetensors")):
        return
    pickled = sorted(x.name for x in p.glob("*.bin")) + sorted(x.name for x in p.glob("*.pt"))
    if pickled:
        raise CheckpointError(f"{p} has only pickled weights ({', '.join(pickled[:3])}); MaskLab loads safetensors "
                              "only. Convert them once where you trust the file's origin: load the model with "
                              "transformers and save_pretrained() it (writes model.safetensors)")
    raise CheckpointError(f"{p} holds no model weights (*.safetensors)")


def weights_file(path: str | Path, kind: str) -> Path:
    """The file whose bytes are the encoder's weights: model.safetensors of the HF directory or of
    the resolved MaskLab checkpoint (a run directory resolves to its latest checkpoint)."""
    p = Path(path)
    if kind == "masklab":
        from masklab.pretrain.hf.convert import resolve_checkpoint

        p = resolve_checkpoint(p)
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{p} holds no .safetensors weights")
    return next((f for f in files if f.name == "model.safetensors"), files[0])


sha256 = file_sha256  # weights are hashed as every other file of the project is


def sentence_transformers_settings(path: str | Path) -> dict:
    """{pooling, max_length, normalize} a sentence-transformers directory declares ({} otherwise).
    Unsupported pooling modes (weighted mean, last token, ...) raise: we would not match it."""
    p = Path(path)
    if not (p / "modules.json").is_file():
        return {}
    try:
        modules = json.loads((p / "modules.json").read_text())
        out: dict = {"normalize": any(m.get("type", "").endswith(".Normalize") for m in modules)}
        pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
        if pooling is not None:
            cfg = json.loads((p / pooling.get("path", "") / "config.json").read_text())
            modes = [v for k, v in _ST_POOLING.items() if cfg.get(k)]
            other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in _ST_POOLING]
            if other or len(modes) != 1:
                raise CheckpointError(f"{p}: sentence-transformers pooling {other or modes} is not supported "
                                      f"(cls, mean or max); pass --pooling to choose one")
            out["pooling"] = modes[0]
        sbert = p / "sentence_bert_config.json"
        if sbert.is_file():
            n = json.loads(sbert.read_text()).get("max_seq_length")
            if n:
                out["max_length"] = int(n)
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{p}: unreadable sentence-transformers configuration: {e}") from None
    log.info("%s: sentence-transformers settings %s", p, out)
    return out


def resolve_settings(path: str | Path, kind: str, pooling: Optional[str], max_length: Optional[int],
                     normalize: Optional[bool]) -> tuple[str, Optional[int], bool]:
    """Explicit values win; else the sentence-transformers config (HF dirs); else mean / model max / off."""
    st = sentence_transformers_settings(path) if kind in ("hf", "masklab-import") else {}
    return (pooling or st.get("pooling", "mean"), max_length or st.get("max_length"),
            st.get("normalize", False) if normalize is None else bool(normalize))
