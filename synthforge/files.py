"""Core file I/O: reading what users give us (bad text is a one-line error), and writing so that nothing of the
user's is overwritten, an output appears whole or not at all, and one writer holds an output at a time.

Every command writes through these helpers:

- :func:`write_atomic` / :func:`write_jsonl`: a temp file beside the target, renamed over it; a temp file left by
  a killed process (its pid is gone) is removed by the next write of the same target.
- :func:`output_lock`: an exclusive lock on an output, naming the holder's pid to a second writer.
- :func:`staging_dir` + :func:`publish`: a multi-file output is built in a hidden staging folder, then moved into
  place following a journal written first, so a crash mid-publish is completed by the next writer
  (:func:`recover`), which holds the lock and also removes what killed writers left behind.
- :func:`claim_file` / :func:`claim_dir`: an output is only ever something new, empty, or written before by the
  same command, and never one of the invocation's own inputs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from synthforge.errors import UserError

TEMP = ".synthforge-tmp-"  # .NAME.synthforge-tmp-PID-XXXX: a file being written
PARTIAL = ".partial-"  # .NAME.partial-PID-XXXX: a staging folder or file being built
OLD = ".old-"  # .NAME.old-PID-XXXX: a previous output being replaced
JOURNAL = ".publish.json"  # .NAME.publish.json: the moves of a publication in progress
LOCK = ".lock"  # .NAME.lock: held while a command writes NAME


BOM = "\ufeff"  # a UTF-8 byte-order mark some editors put first: invisible, and never part of the text


def read_text(path: Path, what: str = "file") -> str:
    """The file's text, without a leading byte-order mark; invalid UTF-8 (a binary file, another encoding)
    names the file and the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: {what} is a directory, expected a file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}:{line}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def cannot_write(path: Path, exc: OSError) -> UserError:
    """The one-line error for a write the file system refused (read-only, permissions, disk full)."""
    reason = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device"}.get(exc.errno or 0)
    return UserError(f"{path}: cannot write here: {reason or exc.strerror or exc}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a file system refusing a write under ``path`` into a one-line user error."""
    try:
        yield
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise cannot_write(path, exc) from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM):
            raise cannot_write(path, exc) from None
        raise


def real_path(path: Path | str) -> Path:
    """Where writing ``path`` lands: absolute, ``~`` expanded, every symlink followed (a dangling one to the path
    it names). Outputs are claimed, locked, staged, journaled and published at their real path, so a user's link
    is written through, never replaced, and a journal means the same files from any working directory."""
    return Path(os.path.realpath(os.path.expanduser(path)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, prefix: str) -> int | None:
    """The pid in a helper file's name (``prefix`` then ``PID-...``), or None."""
    head = name[len(prefix) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def sweep(target: Path, everything: bool = False) -> int:
    """Remove what killed writers of ``target`` left beside it: temp files, staging folders, replaced outputs.
    Only those whose writer is gone, unless ``everything`` (the caller holds ``target``'s lock, so no writer of
    it is alive). A replaced output is the last complete copy when ``target`` itself is gone: it is put back,
    never removed. Returns how many were removed."""
    target = real_path(target)
    parent, removed = target.parent, 0
    if not parent.is_dir():
        return 0
    for kind in (TEMP, PARTIAL, OLD):
        prefix = f".{target.name}{kind}"
        leftovers = sorted(parent.glob(f"{_glob_escape(prefix)}*"), key=_mtime, reverse=True)
        for leftover in leftovers:
            pid = _owner(leftover.name, prefix)
            if pid is None or (not everything and (pid == os.getpid() or _pid_alive(pid))):
                continue
            if kind == OLD and not (target.exists() or target.is_symlink()):
                os.replace(leftover, target)  # the newest replaced copy, with nothing in its place: restore it
                continue
            _remove(leftover)
            removed += 1
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one, never a part (through a
    symlink: the link stays, the file it points to is replaced)."""
    path = real_path(path)
    make_dirs(path.parent)
    with writing(path):
        sweep(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP}{os.getpid()}-", dir=path.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs get the usual permissions
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write rows as JSON lines; returns the row count."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    write_atomic(path, "".join(lines))
    return len(lines)


def make_dirs(path: Path) -> None:
    """Create a directory and its parents (through symlinks: a dangling link's target is created, as ``mkdir -p``
    does); a path under a file, or one we may not create, is a user error."""
    try:
        real_path(path).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path}: cannot create a directory here (a file is in the way)") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied creating a directory") from None
    except OSError as exc:
        raise cannot_write(path, exc) from None


def check_writable(folder: Path) -> None:
    """Refuse, in one line, a folder the file system won't let us create and remove files in (read-only, an
    immutable flag, permissions): checked before any work that would only fail at its end."""
    if not folder.is_dir():
        return
    with writing(folder):
        fd, probe = tempfile.mkstemp(prefix=f".synthforge-write-check-{os.getpid()}-", dir=folder)
        os.close(fd)
        os.unlink(probe)


# -- one writer at a time -------------------------------------------------------------------------------
def lock_path_for(target: Path) -> Path:
    """The lock file of an output: hidden, beside it (the output itself may be replaced while it is held); one
    lock however the output is named (through a symlink, from another folder)."""
    target = real_path(target)
    return target.parent / f".{target.name}{LOCK}"


@contextlib.contextmanager
def exclusive_lock(lock: Path, busy: str, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on file ``lock`` (created if needed) for the block; a second holder gets the
    one-line error ``busy`` with ``{pid}`` replaced by the holder's pid. The OS releases it even after ``kill -9``.
    With ``remove``, the lock file is deleted on release (a waiter that opened it first notices, locks the new one)."""
    make_dirs(lock.parent)
    while True:
        with writing(lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(busy.replace("{pid}", holder)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its last holder after we opened it: lock the new one
    try:
        with writing(lock):  # a full disk may refuse even these few bytes
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if remove:
            Path(lock).unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def output_lock(target: Path, option: str, command: str, siblings: Iterable[Path] = ()) -> Iterator[None]:
    """Hold ``target``'s lock for one invocation of ``command``; complete a publication a killed writer left
    half done, and remove what killed writers left beside it and its ``siblings`` (files published with it)."""
    busy = f"{option} {target}: another synthforge {command} is writing there (pid {{pid}}); wait for it to finish"
    with exclusive_lock(lock_path_for(target), busy, remove=True):
        with writing(target):
            recover(journal_path_for(target))
            for path in (target, *siblings):
                sweep(path, everything=True)
        yield


def made_by(path: Path, maker: str) -> bool:
    """Whether ``path`` is a JSON object a synthforge command wrote, saying so as ``{"made_by": maker}``."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("made_by") == maker


# -- new, empty, or ours; never an input -------------------------------------------------------------
def check_not_input(target: Path, inputs: Iterable[Path | str], option: str) -> None:
    """Refuse an output that is one of the invocation's inputs, or a folder holding one."""
    resolved = target.expanduser().resolve()
    for source in inputs:
        source = Path(source).expanduser().resolve()
        if resolved == source:
            raise UserError(f"{option} {target}: that is an input of this command; write somewhere else")
        if source.is_relative_to(resolved):
            raise UserError(f"{option} {target}: the input {source} is inside it; write somewhere else")


def claim_file(target: Path, ours: Callable[[Path], bool], option: str, command: str) -> None:
    """A single-file output: new, or a file this command wrote before (``ours``); else one line, exit 2."""
    if target.is_dir():
        raise UserError(f"{option} {target}: that is a directory; give a file name")
    if target.exists() and not ours(target):
        raise UserError(
            f"{option} {target}: the file exists and was not written by synthforge {command}; "
            "give a new name (synthforge never writes over files it did not write)"
        )
    if target.parent.exists() and not target.parent.is_dir():
        raise UserError(f"{option} {target}: {target.parent} is a file, not a directory")


def claim_dir(target: Path, ours: Callable[[Path], bool], option: str, command: str) -> None:
    """A directory output: new, empty, or one this command wrote before (``ours``); else one line, exit 2."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {target}: a file is in the way (expected a directory)")
    if target.is_dir() and any(target.iterdir()) and not ours(target):
        raise UserError(
            f"{option} {target}: the directory holds files not written by synthforge {command}; "
            "give a new or empty directory (synthforge never writes over what it did not write)"
        )


# -- whole outputs -------------------------------------------------------------------------------------
def journal_path_for(target: Path) -> Path:
    target = real_path(target)
    return target.parent / f".{target.name}{JOURNAL}"


def staging_dir(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` to build it in (removed by :func:`sweep` if its writer dies)."""
    target = real_path(target)
    make_dirs(target.parent)
    with writing(target.parent):
        return Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL}{os.getpid()}-", dir=target.parent))


def discard_staging(staging: Path, target: Path) -> None:
    """Remove a staging folder of ``target``, unless a publication from it is pending (it failed part-way: the
    next writer of ``target`` completes it from there)."""
    if not journal_path_for(target).exists():
        shutil.rmtree(staging, ignore_errors=True)


def publish(moves: list[tuple[Path | None, Path]], journal: Path) -> None:
    """Put finished files and folders in place: each ``(source, target)`` replaces ``target`` with ``source``
    (``None``: remove ``target``), in order. The moves are journaled first, with real paths (so they mean the same
    files from any working directory), and a crash part-way is completed by :func:`recover` (the next writer of
    the output calls it): the old set stays whole until the journal is written, and the new set is whole once
    recovery has run. A target that is a symlink is written through: the link stays, its target is replaced."""
    entries = [
        {"source": None if s is None else str(real_path(s)), "target": str(real_path(t)), "old": None} for s, t in moves
    ]
    for entry in entries:
        entry["old"] = str(_old_name(Path(entry["target"])))
    write_atomic(journal, json.dumps({"pid": os.getpid(), "moves": entries}) + "\n")
    _apply(entries)
    journal.unlink(missing_ok=True)


def _old_name(target: Path) -> Path:
    return target.parent / f".{target.name}{OLD}{os.getpid()}-{os.urandom(4).hex()}"


def _apply(entries: list[dict[str, Any]]) -> None:
    """Carry out journaled moves; each step can be repeated after a crash (idempotent). A replaced output is
    removed only once its replacement is in place: the last complete copy is never deleted."""
    for index, entry in enumerate(entries):
        source = Path(entry["source"]) if entry["source"] else None
        target, old = Path(entry["target"]), Path(entry["old"])
        if source is not None and not source.exists():
            continue  # this move was done
        if source is None and any(
            later["target"] == entry["target"] and later["source"] and not Path(later["source"]).exists()
            for later in entries[index + 1 :]
        ):
            continue  # the target was taken away and its new version is already in place
        if source is not None and source.is_file() and not target.is_dir():
            os.replace(source, target)  # one atomic step for a file
            continue
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        if source is not None:
            os.replace(source, target)
    for entry in entries:
        old, target = Path(entry["old"]), Path(entry["target"])
        if not (old.exists() or old.is_symlink()):
            continue
        replaced = any(e["target"] == entry["target"] and e["source"] for e in entries)
        if replaced and not (target.exists() or target.is_symlink()):
            os.replace(old, target)  # its replacement is missing: the old copy stays the output
        else:
            _remove(old)


def recover(journal: Path) -> bool:
    """Complete a publication a killed writer left half done (call it holding the output's lock); True if
    there was one."""
    if not journal.is_file():
        return False
    try:
        entries = json.loads(journal.read_text(encoding="utf-8"))["moves"]
        entries = [dict(entry) for entry in entries]
    except (ValueError, KeyError, TypeError):
        journal.unlink()  # torn before it was complete: no move had started, the old set is intact
        return False
    _apply([_rebased(entry, journal) for entry in entries])
    journal.unlink(missing_ok=True)
    return True


def _rebased(entry: dict[str, Any], journal: Path) -> dict[str, Any]:
    """A journal entry with absolute paths. Journals written before paths were made real hold them as given,
    relative to the writer's folder: that folder is found from the journal's own place (beside the target)."""
    target = Path(entry["target"])
    if target.is_absolute():
        return entry
    base = journal.parent.absolute()
    for part in reversed(target.parent.parts):
        if part != base.name:
            raise UserError(
                f"{journal}: an interrupted publication names {target} relative to a folder that cannot be "
                "found; nothing was removed: finish or undo it by hand, then remove the journal"
            )
        base = base.parent
    return {k: (v if v is None or Path(v).is_absolute() else str(base / v)) for k, v in entry.items()}
