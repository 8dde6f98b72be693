"""Issue 35 item 1: the stale-temp cleaner touches only directories that carry our marker and
whose writer's lock is free; pids mean nothing across PID namespaces or nodes."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masklab.atomic import MARKER, atomic_dir, clean_stale

pytestmark = pytest.mark.reliability
CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parents[2]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _user_dirs(parent: Path) -> dict:
    """A user's own folders that merely look like ours (pids above pid_max: never alive)."""
    made = {}
    for name in (".thesis.tmp-4000000", ".photos.old-4000001"):
        (parent / name / "ch1").mkdir(parents=True)
        (parent / name / "ch1" / "draft.tex").write_text(f"{name} text")
        made[name] = sorted(str(p.relative_to(parent)) for p in (parent / name).rglob("*"))
    return made


def _assert_untouched(parent: Path, made: dict) -> None:
    for name, files in made.items():
        assert sorted(str(p.relative_to(parent)) for p in (parent / name).rglob("*")) == files, name
        assert (parent / name / "ch1" / "draft.tex").read_text() == f"{name} text"
    assert not (parent / "photos").exists() and not (parent / "thesis").exists()


def test_user_folders_that_look_like_temp_dirs_survive_a_write(tmp_path, caplog):
    made = _user_dirs(tmp_path)
    own_old_style = tmp_path / f".out.tmp-{os.getpid()}"  # the name the old code took (and rmtree'd) blindly
    (own_old_style / "keep").mkdir(parents=True)
    with caplog.at_level("INFO"), atomic_dir(tmp_path / "out") as tmp:
        assert tmp != own_old_style and sorted(p.name for p in tmp.iterdir()) == [MARKER]
        (tmp / "f").write_text("new")
    _assert_untouched(tmp_path, made)
    assert (own_old_style / "keep").is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f"]  # no marker in the output
    assert "left" in caplog.text and ".thesis.tmp-4000000" in caplog.text


_DIE_IN_WRITE = """
import os, sys
from masklab.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "half").write_text("x")
    os._exit(9)  # kill -9 while writing: the lock goes with the process
"""
_DIE_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from masklab.atomic import _mark, aux_path
out = Path(sys.argv[1]); old = aux_path(out, "old")
_mark(out, "old", out.name, as_name=old.name)
os.rename(out, old)
os._exit(9)  # died before the new copy was renamed in
"""


def test_dead_masklab_writer_is_cleaned_and_old_copy_restored(tmp_path, caplog):
    (tmp_path / "prev").mkdir()
    (tmp_path / "prev" / "f").write_text("old")
    for script, arg in ((_DIE_IN_WRITE, tmp_path / "out"), (_DIE_BETWEEN_RENAMES, tmp_path / "prev")):
        r = subprocess.run([sys.executable, "-c", script, str(arg)], env=_env(), capture_output=True, text=True,
                           check=False)
        assert r.returncode == 9, r.stderr
    assert not (tmp_path / "prev").exists() and len(list(tmp_path.iterdir())) == 2
    made = _user_dirs(tmp_path)
    with caplog.at_level("WARNING"), atomic_dir(tmp_path / "next") as tmp:
        (tmp / "f").write_text("new")
    _assert_untouched(tmp_path, made)
    assert sorted(x.name for x in tmp_path.iterdir() if x.name not in made) == ["next", "prev"]
    assert sorted(p.name for p in (tmp_path / "prev").iterdir()) == ["f"]  # the marker went with the restore
    assert (tmp_path / "prev" / "f").read_text() == "old" and "restored" in caplog.text and "dead writer" in caplog.text


_WRITER = """
import json, os, sys, time
from pathlib import Path
from masklab.atomic import atomic_dir
out, sig = Path(sys.argv[1]), Path(sys.argv[2])
with atomic_dir(out) as tmp:
    (tmp / "part1").write_text("first half")
    (sig / "ready").write_text(json.dumps({"tmp": tmp.name, "pid": os.getpid()}))
    t0 = time.time()
    while not (sig / "go").exists():
        if time.time() - t0 > 60:
            sys.exit(3)
        time.sleep(0.05)
    (tmp / "part2").write_text("second half")
"""


def _unshare_ok() -> str:
    if os.geteuid() != 0:
        return "needs root for unshare --pid --mount-proc"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                       check=False)
    return "" if r.returncode == 0 else f"unshare --pid fails here: {r.stderr.strip()[:200]}"


def test_live_writer_in_another_pid_namespace_keeps_its_temp_dir(tmp_path):
    why = _unshare_ok()
    if why:
        pytest.fail(f"CI=true: {why}") if CI else pytest.skip(why)
    parent, sig = tmp_path / "shared", tmp_path / "sig"
    parent.mkdir()
    sig.mkdir()
    made = _user_dirs(parent)
    # the writer's pid inside its namespace is one that is dead here (as a writer on another node looks)
    ns_pid = next(p for p in range(30000, 300, -1) if not os.path.exists(f"/proc/{p}"))
    cmd = (f"echo {ns_pid - 1} > /proc/sys/kernel/ns_last_pid; "
           f"{sys.executable} -c '{_WRITER}' {parent / 'hfA'} {sig}")
    w = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", cmd], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (sig / "ready").exists():
            assert w.poll() is None, w.communicate()
            assert time.time() - t0 < 60
            time.sleep(0.05)
        info = json.loads((sig / "ready").read_text())
        assert info["pid"] == ns_pid  # the old code judged it by this pid: dead here
        clean_stale(parent)  # a cleaner in this namespace, as the next writer runs it
        with atomic_dir(parent / "other") as tmp:  # and a whole write beside it
            (tmp / "x").write_text("y")
        assert (parent / info["tmp"] / "part1").read_text() == "first half", "the live writer's temp dir was touched"
        (sig / "go").write_text("")
        _, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
    finally:
        if w.poll() is None:
            w.kill()
    assert sorted(p.name for p in (parent / "hfA").iterdir()) == ["part1", "part2"]
    _assert_untouched(parent, made)
