"""Atomic output directories: the one way MaskLab writes a directory (checkpoints, prep, PMI
tables, token weights, HF exports, downstream runs), and the overlap guard every writer calls.

`atomic_dir(out)` yields a fresh `.<name>.tmp-<host>-<pid>-<random>` next to `out`; when the
block succeeds, every file and directory in it is fsynced, and it is renamed onto `out`. An
existing `out` is first renamed to `.<name>.old-<host>-<pid>-<random>` (the recoverable old copy)
and removed only after the new one is in place, so at every instant either `out` or its old copy
is complete; the parent directory is fsynced after each rename so the result survives a power
cut. On an error the temp directory is removed and `out` is exactly what it was; a full disk or
another OS error becomes one line ("No space left on device while writing X; ...") and exit 2.

Ownership and liveness (issue 35): a pid in a name means nothing in another PID namespace or on
another node of a shared filesystem, and a user may own a folder called `.thesis.tmp-4000000`.
So every temp / old directory we make carries a marker file, `.masklab-writer` (JSON naming the
directory and its target), written first, under a lock: the writer holds an exclusive flock on
the marker for as long as it lives. When the next writer of the same parent starts, it looks
only at directories holding our marker, and acts only if it can take that lock (non-blocking):
then the writer is gone (kill -9, OOM, power cut) and its temp directory is removed, its old copy
put back when `out` itself is missing (the crash fell between the two renames), else removed,
each with a log line. A directory without our marker, or whose lock is held, or whose lock
cannot be judged (a filesystem without flock), is left alone. NFS: Linux maps flock onto POSIX
locks on NFS (lockd / NFSv4), so the lock holds across nodes; on Lustre mounted without
`-o flock` the lock call fails and the cleaner leaves such directories alone.

`refuse_overlap(out, inputs)`: resolved real paths; an output that equals, contains or lies
inside an input (or the current directory) is refused, whatever `--overwrite` says.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator, Mapping, Optional

from safetensors import SafetensorError

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.atomic")
MARKER = ".masklab-writer"
_AUX = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<tag>[^/]+)$")
_MAGIC = "masklab-atomic-v1"


def unique_tag() -> str:
    """host-pid-random: unique across nodes, PID namespaces and pid reuse."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def aux_path(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{unique_tag()}"


def _mark(d: Path, kind: str, out_name: str, as_name: Optional[str] = None) -> int:
    """Write our marker in `d` (to be known as `as_name`, default its own name) under an exclusive
    flock; -> the open fd (keep it open: the lock is the writer's liveness). The marker appears
    under its final name only once locked, so a cleaner never sees an unlocked marker of a live
    writer."""
    staging = d / f"{MARKER}.{secrets.token_hex(4)}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:  # no flock here (e.g. Lustre without -o flock): cleaners will leave it alone
            log.debug("no flock on %s (%s)", staging, e)
        os.write(fd, json.dumps({"magic": _MAGIC, "kind": kind, "dir": as_name or d.name, "out": out_name,
                                 "host": socket.gethostname(), "pid": os.getpid()}).encode())
        os.rename(staging, d / MARKER)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return fd


def _claim_dead(d: Path) -> Optional[tuple[int, dict]]:
    """-> (locked fd, marker) when `d` is ours and its writer is gone; None: not ours, alive, or unknown."""
    try:
        fd = os.open(d / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = json.loads(os.read(fd, 1 << 16) or b"null")
        ok = (isinstance(info, dict) and info.get("magic") == _MAGIC and info.get("dir") == d.name
              and info.get("kind") in ("tmp", "old") and isinstance(info.get("out"), str)
              and "/" not in info["out"] and info["out"] not in ("", ".", "..")
              and d.name.startswith(f".{info['out']}.{info['kind']}-"))  # never acts outside `parent`
        if ok:
            return fd, info
    except (OSError, ValueError):  # held (a live writer, any node, any namespace) or not ours
        pass
    os.close(fd)
    return None


def clean_stale(parent: Path) -> None:
    """Remove (or restore) the temp / old directories that dead MaskLab writers left in `parent`;
    anything else that looks like one (no marker of ours, or a live lock) is left alone."""
    if not parent.is_dir():
        return
    for d in parent.iterdir():
        m = _AUX.match(d.name)
        if not m or d.is_symlink() or not d.is_dir():
            continue
        claim = _claim_dead(d)
        if claim is None:
            if not (d / MARKER).exists():
                log.info("left %s alone: it was not written by masklab (no %s marker)", d, MARKER)
            continue
        fd, info = claim
        try:
            out = parent / info["out"]
            if info["kind"] == "old" and not os.path.lexists(out):
                os.rename(d, out)
                (out / MARKER).unlink(missing_ok=True)
                log.warning("restored %s from %s (its writer, %s pid %s, died while replacing it)", out, d.name,
                            info.get("host"), info.get("pid"))
            else:
                shutil.rmtree(d, ignore_errors=True)
                log.warning("removed %s left by a dead writer (%s pid %s)", d, info.get("host"), info.get("pid"))
        finally:
            os.close(fd)


def _same_or_inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def refuse_overlap(out: str | Path, inputs: Mapping[str, object], flag: str = "--out") -> None:
    """Refuse (MaskLabError, one line) when the output `out` equals, contains or lies inside any
    input, compared as resolved real paths (symlinks, `..`, `.`), or when it is the current
    directory or one of its parents. `inputs`: {label: path or None}; a value that names nothing
    on disk (a hub name, 'pydoc') cannot overlap and is skipped. With or without --overwrite."""
    o = Path(os.path.realpath(out))
    cwd = Path(os.getcwd())
    if _same_or_inside(cwd, o):
        raise MaskLabError(f"{flag} {out} is {'the current directory' if o == cwd else 'a parent of the current directory'}"
                           f"; refusing to replace it: name a new directory (e.g. {flag} ./out)")
    for label, p in inputs.items():
        if p is None or p == "" or not os.path.lexists(str(p)):
            continue
        i = Path(os.path.realpath(str(p)))
        how = "is" if o == i else "contains" if o in i.parents else "lies inside" if i in o.parents else None
        if how:
            raise MaskLabError(f"{flag} {out} {how} the input {label} {p}; refusing to write there "
                               "(with or without --overwrite): choose an output outside every input")


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
    """Yield an empty temp directory (holding only our locked marker) that becomes `out` when the
    block succeeds. `intact`: what the error message says survived a failed write."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent)
    tmp, fd = None, None
    try:
        while tmp is None:  # a fresh name, never an existing directory (ours or anyone's) reused
            cand = aux_path(out, "tmp")
            try:
                cand.mkdir()
                tmp = cand
            except FileExistsError:
                continue
        fd = _mark(tmp, "tmp", out.name)
        yield tmp
        (tmp / MARKER).unlink()  # the output carries no marker; the lock (fd) still holds until done
        fsync_tree(tmp)
        replace_dir(tmp, out)
    except (OSError, SafetensorError) as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = intact or (f"{out} is unchanged" if out.exists() else f"nothing was written to {out}")
        raise MaskLabError(f"{_describe(e)} while writing {out}; {kept}") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def atomic_file(out: str | Path, data: str | bytes) -> Path:
    """Write `data` to `out` through a fresh `.<name>.tmp-<host>-<pid>-<random>` file, fsync and a
    rename: `out` is the old file or the complete new one, never a prefix; a full disk is one
    line, as for `atomic_dir`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = aux_path(out, "tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "xb") as f:  # exclusive: never truncates a file that is not ours
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except OSError as e:
        if not isinstance(e, FileExistsError):
            tmp.unlink(missing_ok=True)
        kept = f"{out} is unchanged" if out.exists() else f"nothing was written to {out}"
        raise MaskLabError(f"{_describe(e)} while writing {out}; {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def replace_dir(src: Path, out: Path) -> None:
    """Rename `src` onto `out`; an existing `out` is kept as a marked, locked old copy
    (`.<name>.old-<host>-<pid>-<random>`) until the new one is in place."""
    old = aux_path(out, "old")
    fd = None
    try:
        if os.path.lexists(out):
            try:  # mark it ours first, so a cleaner may restore it if we die between the renames
                if not out.is_symlink():  # never write into a link's target
                    fd = _mark(out, "old", out.name, as_name=old.name)
            except OSError as e:  # a read-only old output: it is replaced all the same, unmarked
                log.debug("cannot mark %s (%s)", out, e)
            try:
                os.rename(out, old)
            except BaseException:
                (out / MARKER).unlink(missing_ok=True)
                raise
            fsync_dir(out.parent)
        try:
            os.rename(src, out)
        except BaseException:
            if fd is not None and not os.path.lexists(out):  # put the old output back at once
                os.rename(old, out)
                (out / MARKER).unlink(missing_ok=True)
            raise
        fsync_dir(out.parent)
        if old.is_symlink():  # the link is replaced, its target is not ours to delete
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)

