"""What a Hugging Face folder may hold before transformers reads it: no custom code, no pickles.

transformers runs a folder's own Python when its config.json / tokenizer_config.json names classes
in `auto_map` (with `configuration_*.py`, `modeling_*.py` beside them) and trust_remote_code is
true; left at None it asks y/N on a terminal. MaskLab passes `trust_remote_code=False` to every
`from_pretrained` / `from_config` call (`HF_NO_CODE`; tests/reliability/test_hostile_files.py
greps for it) and refuses an `auto_map` folder before transformers is asked, with a message that
never suggests turning remote code on. Pickled weights (`*.bin`, `*.pt`) are refused by
`downstream.encoders.source.require_safetensors` and `hf.convert.import_hf_model`.
"""
from __future__ import annotations

import json
from pathlib import Path

from masklab.errors import CheckpointError

HF_NO_CODE = {"trust_remote_code": False}  # spread into every from_pretrained / from_config call
_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def refuse_custom_code(path: str | Path) -> None:
    """CheckpointError when a config file of the folder declares `auto_map` (custom Python code)."""
    p = Path(path)
    for name in _CONFIGS:
        f = p / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {f}: {e}") from None
        if isinstance(data, dict) and "auto_map" in data:
            code = ", ".join(sorted(x.name for x in p.glob("*.py"))[:3]) or "code from the hub"
            raise CheckpointError(f"{f} declares auto_map (custom model code: {code}); MaskLab never runs code "
                                  "shipped with a model folder: use a model whose model_type transformers knows")
