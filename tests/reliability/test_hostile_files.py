"""Issue 35 (hostile files): what MaskLab refuses to run, unpickle, resolve or allocate, and the
one line it says instead. Downstream cases (auto_map folders, pickled fine-tunes, labels,
bundles) are in tests/downstream/test_hostile_downstream.py."""
import ast
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from masklab.config import from_yaml_text, load_config, to_yaml
from masklab.errors import CheckpointError, ConfigError
from masklab.pretrain.checkpoint.integrity import MANIFEST, verify_manifest
from masklab.pretrain.checkpoint.store import load_model_weights, save_checkpoint
from tests.conftest import TINY

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, timeout=300, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, **kw)


def error_line(r) -> str:
    """The one line the CLI prints for a user error (and no traceback)."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("masklab ")]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


# --- item 4: no from_pretrained / from_config without trust_remote_code=False ------------------
def test_every_from_pretrained_call_passes_trust_remote_code_false():
    missing = []
    for f in sorted((ROOT / "masklab").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("from_pretrained", "from_config"):
                ok = any(k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is False
                         for k in node.keywords)
                if not ok:
                    missing.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not missing, f"calls without trust_remote_code=False: {missing}"


# --- item 5: a compression bomb (one 200 MB line in a ~200 KB .gz) ------------------------------
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(r.returncode)")


def _prep_peak_kb(corpus: Path, out: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run `masklab prep` as the child of a fresh process; -> (result, the child's peak RSS in KB)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "masklab.cli", "prep", "--corpus",
                        str(corpus), "--out", str(out), "--vocab-size", "200"], capture_output=True, text=True,
                       env=env, timeout=600)
    return r, int(r.stderr.rsplit("PEAK_KB", 1)[1].split()[0])


def test_compression_bomb_is_skipped_with_a_count_in_bounded_memory(tmp_path):
    prose = "".join(f"The parser reads token {i} from the stream and the compiler checks every name it binds.\n\n"
                    for i in range(400))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text(prose)
    bomb_dir = tmp_path / "bomb"
    bomb_dir.mkdir()
    (bomb_dir / "a.txt").write_text(prose)
    chunk = b"the parser reads tokens " * (1 << 16)  # 1.5 MB, no newline
    with gzip.open(bomb_dir / "bomb.txt.gz", "wb", compresslevel=6) as f:
        for _ in range(200 << 20 // len(chunk)):  # ~200 MB of one line
            f.write(chunk)
        f.write(b"\n\nA short document after the bomb.\n")
    assert (bomb_dir / "bomb.txt.gz").stat().st_size < 2 << 20
    base, base_kb = _prep_peak_kb(tmp_path / "plain", tmp_path / "out_plain")
    assert base.returncode == 0, base.stderr[-2000:]
    r, bomb_kb = _prep_peak_kb(bomb_dir, tmp_path / "out_bomb")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped 1 document(s) longer than --max-document-bytes=8388608" in r.stderr
    manifest = json.loads((tmp_path / "out_bomb" / "manifest.json").read_text())
    assert manifest["overlong_documents_skipped"] == 1
    assert manifest["counts"]["train"]["documents"] + manifest["counts"]["validation"]["documents"] == 401
    # bounded by construction: the 200 MB line never sits in memory (before issue 35: a 14.9 GB peak, killed)
    print(f"peak RSS: prep without the bomb {base_kb / 1024:.0f} MB, with it {bomb_kb / 1024:.0f} MB")
    assert bomb_kb - base_kb < 64 * 1024, (base_kb, bomb_kb)


def test_over_long_paragraphs_and_json_lines_are_skipped_and_counted(tmp_path):
    from masklab.data_prep.sources import Piece, ReadStats, documents

    txt = tmp_path / "a.txt"
    long_par = "\n".join(["word " * 30] * 20)  # 20 lines of 150 bytes: a 3 KB paragraph
    txt.write_text(f"short one\n\n{long_par}\n\n{'x' * 5000}\nsame paragraph\n\nlast one\n")
    stats = ReadStats()
    docs = list(documents(Piece("txt", str(txt)), stats=stats, max_bytes=1000))
    assert docs == ["short one", "last one"] and stats.overlong_documents == 2
    js = tmp_path / "a.jsonl"
    js.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "y" * 5000}) + "\n" +
                  json.dumps({"text": "fine"}) + "\n")
    stats = ReadStats()
    assert list(documents(Piece("json", str(js)), stats=stats, max_bytes=1000)) == ["ok", "fine"]
    assert stats.overlong_documents == 1
    from masklab.data_prep import PrepOptions, prepare
    with pytest.raises(ConfigError, match="--max-document-bytes must be >= 1"):
        prepare(PrepOptions(source=str(txt), out=str(tmp_path / "o"), max_document_bytes=0))


# --- item 6: absurd sizes are refused before anything is allocated ------------------------------
def test_absurd_hidden_size_is_refused_naming_keys_need_and_available(tiny_overrides):
    from masklab.pretrain.loop.train import train

    cfg = load_config("configs/smoke_cpu.yaml", tiny_overrides + ["model.hidden_size=10000000"])
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"model.hidden_size=10000000.*need [\d.,]+ TiB, but only [\d.]+ GiB is "
                                          r"(available|free)"):
        train(cfg)
    assert time.time() - t0 < 60


def test_hf_config_promising_a_huge_model_beside_tiny_weights_is_refused(tmp_path):
    """A 1 KB config.json with hidden_size 2**20 next to a tiny model.safetensors."""
    from safetensors.torch import save_file
    from transformers import BertConfig

    from masklab.pretrain import import_hf

    d = tmp_path / "hf"
    d.mkdir()
    cfg = BertConfig(vocab_size=64, hidden_size=2 ** 20, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    cfg.save_pretrained(d)
    assert (d / "config.json").stat().st_size < 2048
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(64, 8)}, str(d / "model.safetensors"))
    (d / "tokenizer.json").write_text(_tokenizer_json())
    with pytest.raises(ConfigError, match=r"config.json: hidden_size=1048576.*describe [\d,]+ parameters, but the "
                                          r"weight files hold 512"):
        import_hf(d)
    from masklab.pretrain.model.memory import check_hf_config_fits
    with pytest.raises(ConfigError, match=r"hidden_size=1048576, num_hidden_layers=2.*need .* TiB, but only"):
        check_hf_config_fits(cfg, d, training=False)


def _tokenizer_json(pattern: str = "") -> str:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "the"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), "isolated") if pattern else pre_tokenizers.Whitespace()
    return tok.to_str()


# --- item 8: saved configs are plain data -------------------------------------------------------
@pytest.mark.parametrize("yaml_text,key", [
    ("data:\n  shards: ${oc.env:HOME}\n", "data.shards"),
    ("model:\n  hidden_size: ${model.hidden_size}\n", "model.hidden_size"),
    ("train:\n  out_dir: runs/${oc.env:USER,x}/a\n", "train.out_dir"),
])
def test_interpolations_in_a_saved_config_are_refused(yaml_text, key, tmp_path):
    with pytest.raises(ConfigError, match=rf"saved config: '{key}' holds an interpolation .*plain data"):
        from_yaml_text(yaml_text)
    if "HOME" not in yaml_text:
        return  # one case through the CLI is enough
    ck = _checkpoint(tmp_path / "run")
    (ck / "config.yaml").write_text(yaml_text)
    from masklab.pretrain.checkpoint.integrity import write_manifest
    write_manifest(ck, None)  # re-hashed: only the interpolation is wrong
    r = cli("export", str(ck), "--out", str(tmp_path / "hf"))
    assert r.returncode == 2 and f"config.yaml: '{key}' holds an interpolation" in error_line(r)
    assert not (tmp_path / "hf").exists()


# --- item 9: no checksums, or checksums that point outside ---------------------------------------
def _checkpoint(run: Path) -> Path:
    """A real (tiny) MaskLab checkpoint with a tokenizer, as training writes it."""
    from masklab.data_prep.tokenizer import load_tokenizer
    from masklab.pretrain.model import build_model

    tokdir = run.parent / "tok"
    tokdir.mkdir(parents=True, exist_ok=True)
    (tokdir / "tokenizer.json").write_text(_tokenizer_json())
    cfg = load_config("configs/smoke_cpu.yaml", TINY + ["data.shards=unused"])
    model = build_model(cfg.model, load_tokenizer(tokdir)[1])
    return save_checkpoint(run, 1, model, None, {"out_dir": str(run)}, to_yaml(cfg), tokdir)


def test_checkpoint_without_checksums_is_refused_unless_allowed(tmp_path):
    ck = _checkpoint(tmp_path / "run")
    (ck / MANIFEST).unlink()
    model = torch.nn.Linear(1, 1)
    with pytest.raises(CheckpointError, match=r"has no SHA256SUMS.json: its files cannot be checked.*"
                                              r"--allow-missing-checksums"):
        load_model_weights(model, ck)
    r = cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "hf"))
    assert r.returncode == 2 and "has no SHA256SUMS.json" in error_line(r) and not (tmp_path / "hf").exists()
    r = cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "hf"), "--allow-missing-checksums")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loading it unchecked" in r.stderr and (tmp_path / "hf" / "model.safetensors").is_file()
    from masklab.pretrain.checkpoint.integrity import allow_missing_checksums
    allow_missing_checksums(True)
    try:
        assert verify_manifest(ck) is False
    finally:
        allow_missing_checksums(False)


@pytest.mark.parametrize("entry", ["../secret.txt", "ABS", "sub/../../secret.txt", "link"])
def test_checksum_entries_outside_the_checkpoint_are_refused(tmp_path, entry):
    from masklab.data_prep.tokenizer import file_sha256

    ck = _checkpoint(tmp_path / "run")
    secret = ck.parent / "secret.txt"
    secret.write_text("not part of the checkpoint")
    if entry == "ABS":
        entry = str(secret)
    if entry == "link":
        (ck / "link").symlink_to(secret)
    body = json.loads((ck / MANIFEST).read_text())
    body["files"][entry] = file_sha256(secret)  # the right hash: only the path is wrong
    (ck / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=rf"entry '{entry}' points outside the checkpoint"):
        verify_manifest(ck)


# --- item 11: a tokenizer.json whose regex panics in Rust -----------------------------------------
def test_catastrophic_tokenizer_regex_is_one_line_and_leaves_nothing(tmp_path):
    tok = tmp_path / "evil" / "tokenizer.json"
    tok.parent.mkdir()
    tok.write_text(_tokenizer_json("((a|a)*)*$"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("the a b c\n\n" * 20 + "a" * 40 + "c\n")
    r = cli("prep", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "out"), "--tokenizer", str(tok))
    line = error_line(r)
    assert r.returncode == 2 and f"tokenizer {tok} crashed while encoding" in line and "retry-limit" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "evil"]  # no out, no .out.partial


# --- item 14: Ctrl-C saves like SIGTERM; a second one aborts ---------------------------------------
def test_ctrl_c_saves_a_checkpoint_and_exits(prepared_data, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the trainer and its
    data-loader worker. The trainer saves at the step boundary (torch's worker exits quietly on it)."""
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "masklab.cli", "train", "configs/smoke_cpu.yaml", *TINY,
                          f"data.shards={prepared_data}", f"train.out_dir={run}", "train.max_steps=100000",
                          "train.save_every=100000", "train.eval_every=100000", "data.num_workers=1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = run / "metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < 180 and p.poll() is None:
        if log.exists() and sum('"loss"' in line for line in log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends (the group: trainer and worker)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    assert "received SIGINT: will save and stop" in err
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert ckpts and (ckpts[-1] / "COMPLETE").is_file() and int(ckpts[-1].name[5:]) >= 2


def test_second_ctrl_c_aborts_at_once():
    from masklab.pretrain.loop.stop import StopFlag

    flag = StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert flag.set and flag.signal == signal.SIGINT and not flag.requeue
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        flag.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
