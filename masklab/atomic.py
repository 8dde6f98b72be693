"""Atomic output directories: the one way MaskLab writes a directory (checkpoints, prep, PMI
tables, token weights, HF exports, downstream runs).

`atomic_dir(out)` yields `.<name>.tmp-<pid>` next to `out`; when the block succeeds, every file
and directory in it is fsynced, and it is renamed onto `out`. An existing `out` is first renamed
to `.<name>.old-<pid>` (the recoverable old copy) and removed only after the new one is in place,
so at every instant either `out` or its old copy is complete; the parent directory is fsynced
after each rename so the result survives a power cut. On an error the temp directory is
removed and `out` is exactly what it was; a full disk or another OS error becomes one line
("No space left on device while writing X; ...") and exit 2, not a traceback.

Temp and old directories of processes that died (kill -9, OOM, power cut) are cleaned when the
next writer of the same parent starts: a dead writer's temp directory is removed, a dead
writer's old copy is put back when `out` itself is missing (the crash fell between the two
renames), else removed, each with a log line.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Optional

from safetensors import SafetensorError

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.atomic")
_AUX = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(parent: Path) -> None:
    """Remove (or restore) the temp / old directories that dead writers left in `parent`."""
    if not parent.is_dir():
        return
    for d in parent.iterdir():
        m = _AUX.match(d.name)
        if not m or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        out = parent / m["name"]
        if m["kind"] == "old" and not out.exists():
            os.rename(d, out)
            log.warning("restored %s from %s (its writer, pid %s, died while replacing it)", out, d.name, m["pid"])
        else:
            shutil.rmtree(d, ignore_errors=True)
            log.warning("removed %s left by a dead writer (pid %s)", d, m["pid"])


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (directories last, so their entries are durable)."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(e: BaseException) -> str:
    text = str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text:
        return "No space left on device"
    if getattr(e, "errno", None) == errno.EDQUOT or "Disk quota" in text:
        return "Disk quota exceeded"
    return getattr(e, "strerror", None) or (text.splitlines()[0] if text else type(e).__name__)


@contextlib.contextmanager
def atomic_dir(out: str | Path, intact: Optional[str] = None) -> Iterator[Path]:
    """Yield an empty temp directory that becomes `out` when the block succeeds.

    `intact`: what the error message says survived a failed write (default: `out` is unchanged)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, out)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = intact or (f"{out} is unchanged" if out.exists() else f"nothing was written to {out}")
        raise MaskLabError(f"{_describe(e)} while writing {out}; {kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_file(out: str | Path, data: str | bytes) -> Path:
    """Write `data` to `out` through `.<name>.tmp-<pid>`, fsync and a rename: `out` is the old
    file or the complete new one, never a prefix; a full disk is one line, as for `atomic_dir`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = f"{out} is unchanged" if out.exists() else f"nothing was written to {out}"
        raise MaskLabError(f"{_describe(e)} while writing {out}; {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def replace_dir(src: Path, out: Path) -> None:
    """Rename `src` onto `out`; an existing `out` is kept as `.<name>.old-<pid>` until the new one is in place."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
        fsync_dir(out.parent)
    os.rename(src, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
