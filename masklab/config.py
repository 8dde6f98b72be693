"""Loading configs: the schema (`masklab.config_schema`) <- composed YAML <- dotlist overrides.

Every YAML file and override is merged onto the schema in OmegaConf struct mode, so a
mistyped key or a wrong value type is an error (naming the key and the nearest valid one),
never a silently ignored setting. Every loaded config is validated
(`masklab.config_validation.validate`).
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from masklab.config_schema import MaskLabConfig
from masklab.config_validation import validate
from masklab.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _valid_keys(schema: Any = MaskLabConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
            keys.extend(_valid_keys(f.type, prefix + f.name + "."))
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            keys.extend(_valid_keys(f.default_factory, prefix + f.name + "."))
    return keys


def _nearest(key: str) -> str:
    valid = _valid_keys()
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
    if not match:  # compare the leaf name too, so `train.lr_max` still finds `train.lr`
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in valid}
        m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.4)
        match = [leaves[m[0]]] if m else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        raise ConfigError(f"{source}: unknown config key '{key}'{_nearest(str(key))}") from None
    except ValidationError as e:
        msg = str(e.msg).splitlines()[0]
        raise ConfigError(f"{source}: bad value for '{getattr(e, 'full_key', '?')}': {msg}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {str(e).splitlines()[0]}") from None


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse config {path}: {e}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return cfg


def _compose(path: Path, base: DictConfig, seen: tuple = ()) -> DictConfig:
    """Merge `path` onto `base`, after the parts its `defaults:` list names (depth first)."""
    if path in seen:
        raise ConfigError(f"config composition cycle through {path}")
    raw = _read_yaml(path)
    entries = raw.pop("defaults", None)
    entries = [] if entries is None else entries
    if not (OmegaConf.is_list(entries) or isinstance(entries, list)) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{path}: 'defaults' must be a list of config names (e.g. `defaults: [model/bert_tiny]`), "
                          f"got {OmegaConf.to_container(entries) if OmegaConf.is_config(entries) else entries!r}")
    for entry in entries:
        part = CONFIG_DIR / f"{entry}.yaml"
        if not part.is_file():
            part = (path.parent / f"{entry}.yaml").resolve()
        if not part.is_file():
            raise ConfigError(f"{path}: defaults entry '{entry}' matches no file under {CONFIG_DIR}")
        base = _compose(part, base, seen + (path,))
    return _merge(base, raw, str(path))


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Schema <- config file (with its composed defaults) <- overrides, in order; struct mode.
    An override is `key=value` (dotlist) or `+part/name` (merge configs/part/name.yaml)."""
    cfg = OmegaConf.structured(MaskLabConfig)
    OmegaConf.set_struct(cfg, True)
    if path is not None:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / p).exists():
            p = CONFIG_DIR / p
        cfg = _compose(p, cfg)
    for ov in overrides or []:
        if ov.startswith("+"):  # compose one more part, e.g. `+masking/span` -> configs/masking/span.yaml
            part = CONFIG_DIR / f"{ov[1:]}.yaml"
            if not part.is_file():
                raise ConfigError(f"override '{ov}': no config part {part}")
            cfg = _compose(part, cfg)
            continue
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([ov]), f"override '{ov}'")
    validate(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def _refuse_interpolations(node: Any, source: str, key: str = "") -> None:
    """Saved configs are written resolved (`to_yaml`), so they are plain data: a `${...}` in one
    would read the loader's environment (`${oc.env:...}`), call a resolver, or loop on itself."""
    if isinstance(node, dict):
        for k, v in node.items():
            _refuse_interpolations(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_interpolations(v, source, f"{key}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(f"{source}: '{key}' holds an interpolation ({node[:60]!r}); a saved config is plain "
                          "data (MaskLab writes it resolved), so interpolations and resolvers are refused")


def from_yaml_text(text: str, source: str = "saved config") -> DictConfig:
    """Rebuild a (struct, validated) config from the YAML saved beside a checkpoint; anything else
    (random bytes, broken YAML, a list, an empty file) is one ConfigError naming `source`."""
    cfg = OmegaConf.structured(MaskLabConfig)
    OmegaConf.set_struct(cfg, True)
    try:
        saved = OmegaConf.create(text)
    except Exception as e:  # yaml.YAMLError, and OmegaConf's own errors for odd scalars
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(saved, DictConfig) or not saved:
        got = "an empty file" if not saved else f"a {type(OmegaConf.to_container(saved, resolve=False)).__name__}"
        raise ConfigError(f"{source}: must be a mapping (the resolved config a checkpoint stores), got {got}")
    _refuse_interpolations(OmegaConf.to_container(saved, resolve=False), source)
    cfg = _merge(cfg, saved, source)
    validate(cfg)
    return cfg


def load_saved_config(path: str | Path) -> DictConfig:
    """The config.yaml stored in a checkpoint -> a validated config, or one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (not a MaskLab checkpoint?)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8): the checkpoint's config is damaged") from None
    return from_yaml_text(text, str(path))
