"""embplan.io: the plan archive (:mod:`embplan.io.hdf5`) and atomic file output.

:func:`atomic_output` is the one way embplan writes a file: a temporary file in the target's folder, written,
flushed and fsynced, then moved over the target with :func:`os.replace` (atomic on POSIX and Windows), and the
folder fsynced. A failure at any point leaves an earlier file intact and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import EmbplanError

__all__ = ["atomic_file", "atomic_files", "atomic_output", "atomic_write_bytes", "atomic_write_text", "check_output_path",
           "fsync_path", "remove_stale_temporaries", "output_error"]

log = logging.getLogger(__name__)


def fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """fsync a file (or, with ``directory=True``, a folder) by path; a folder fsync that the platform does not
    support (Windows) is skipped."""
    flags = os.O_RDONLY
    if directory:
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError:
        if directory:  # e.g. Windows cannot open a folder
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _final_mode(target: Path) -> int:
    """The mode of the file being replaced, else 0666 less the process umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def output_error(target: Path, what: str, exc: BaseException) -> str:
    """One line: the path, what could not be written, and why (``No space left on device``, ``Permission
    denied``, ...)."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return f"{target}: cannot write {what}: {reason}"


def check_output_path(
    path: str | os.PathLike[str], *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Raise ``error`` unless ``path`` can be written: its folder exists, is a folder and is writable, and the path
    is not a folder itself."""
    target = Path(path)
    folder = target.parent
    try:
        if not folder.is_dir():
            reason = "is not a folder" if folder.exists() else "does not exist"
            raise error(f"{target}: cannot write {what}: folder {folder} {reason}")
        if target.is_dir():
            raise error(f"{target}: cannot write {what}: it is a folder")
    except OSError as exc:  # e.g. a path component that cannot be searched
        raise error(output_error(target, what, exc)) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{target}: cannot write {what}: folder {folder} is not writable")
    return target


#: Temporary names: ``.<target name>.<pid>.<random>.tmp`` (the pid lets a later write remove what a killed
#: writer left).
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of embplan writers in ``folder`` whose process no longer runs (a writer killed
    before it could clean up); return what was removed. Errors are ignored (best effort)."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        path = Path(folder) / name
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
            log.info("removed %s, left by a writer that was killed", path)
    return removed


def _named_temporary(target: Path) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    return fd, Path(name)


def _unnamed_temporary(folder: Path) -> int | None:
    """An O_TMPFILE file descriptor in ``folder``, or None where the system or file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o600)
    except OSError:  # EOPNOTSUPP, EISDIR (old kernels), EINVAL: fall back to a named temporary file
        return None


def _link_unnamed(fd: int, target: Path) -> Path:
    """Give the O_TMPFILE file ``fd`` a temporary name beside ``target`` (linkat); return that name."""
    folder = target.parent
    dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for _ in range(100):
            tmp_name = f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            try:
                # an explicit dir fd makes os.link call linkat(..., AT_SYMLINK_FOLLOW): the magic /proc link is followed
                os.link(f"/proc/self/fd/{fd}", tmp_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=True)
                return folder / tmp_name
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary name in {folder}")  # pragma: no cover - 100 random collisions
    finally:
        os.close(dir_fd)


class _Pending:
    """One output of :func:`atomic_files`: its target, file descriptor and, for a named temporary, its path."""

    def __init__(self, target: Path, what: str, error: type[EmbplanError]) -> None:
        self.target, self.what, self.error = target, what, error
        self.mode = _final_mode(target)
        self.fd = _unnamed_temporary(target.parent)
        self.tmp: Path | None = None  # the temporary name (named fallback; or after linking an unnamed file)
        self.backup: Path | None = None  # the earlier target, kept until every output is committed
        self.replaced = False
        if self.fd is None:
            self.fd, self.tmp = _named_temporary(target)

    def name_it(self) -> None:
        """fsync, set the mode and give the file a temporary name beside its target."""
        assert self.fd is not None
        if hasattr(os, "fchmod"):
            os.fchmod(self.fd, self.mode)
        else:  # pragma: no cover - Windows (named temporary file)
            os.chmod(self.tmp or self.target, self.mode)
        os.fsync(self.fd)
        if self.tmp is None:
            self.tmp = _link_unnamed(self.fd, self.target)

    def replace(self) -> None:
        assert self.tmp is not None
        if self.target.exists():
            backup = self.target.parent / f".{self.target.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            os.link(self.target, backup)
            self.backup = backup
        os.replace(self.tmp, self.target)
        self.replaced = True

    def roll_back(self) -> None:
        with contextlib.suppress(OSError):
            if self.replaced:
                if self.backup is not None:
                    os.replace(self.backup, self.target)
                    self.backup = None
                else:
                    self.target.unlink()
            elif self.tmp is not None:
                self.tmp.unlink()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.backup is not None:
            with contextlib.suppress(OSError):
                self.backup.unlink()


@contextlib.contextmanager
def atomic_files(
    outputs: list[tuple[str | os.PathLike[str], str]], *, error: type[EmbplanError] = EmbplanError
) -> Iterator[list[BinaryIO]]:
    """Several files, all or nothing: yield one binary file object per ``(path, what)``; on a clean exit every
    file replaces its target; on any failure (while writing or committing) none does, and targets already
    replaced get their earlier content back.

    Each file is an unnamed ``O_TMPFILE`` file until every one is complete (Linux), else a named temporary file
    (see :func:`remove_stale_temporaries`). An ``OSError`` or other ``Exception`` becomes ``error`` naming the
    file at fault; an :class:`EmbplanError` passes through; ``KeyboardInterrupt`` propagates (nothing written).
    """
    targets = [(check_output_path(path, error=error, what=what), what) for path, what in outputs]
    seen: set[Path] = set()
    for target, _what in targets:
        key = target.absolute()
        if key in seen:
            raise error(f"{target}: the same file is named twice as an output")
        seen.add(key)
    for folder in {t.parent for t, _ in targets}:
        remove_stale_temporaries(folder)
    pending: list[_Pending] = []
    current: tuple[Path, str] | None = None
    handles: list[BinaryIO] = []
    committed = False
    try:
        for target, what in targets:
            current = (target, what)
            pending.append(_Pending(target, what, error))
        current = None
        handles = [open(p.fd, "w+b", closefd=False) for p in pending]  # type: ignore[arg-type]
        yield handles
        for p, fh in zip(pending, handles, strict=True):
            current = (p.target, p.what)
            fh.flush()
            p.name_it()
        for p in pending:
            current = (p.target, p.what)
            p.replace()
        current = None
        committed = True
        for folder in {p.target.parent for p in pending}:
            fsync_path(folder, directory=True)
    except EmbplanError:
        raise
    except Exception as exc:
        target, what = current if current is not None else (targets[0] if targets else (Path("."), "file"))
        raise error(output_error(target, what, exc)) from exc
    finally:
        for fh in handles:
            with contextlib.suppress(OSError, ValueError):
                fh.close()
        if not committed:
            for p in reversed(pending):
                p.roll_back()
        for p in pending:
            p.close()
    for p in pending:
        log.debug("wrote %s", p.target)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Iterator[BinaryIO]:
    """Yield a binary file object (readable, writable, seekable) that becomes ``path`` on a clean exit.

    Linux: an unnamed ``O_TMPFILE`` file, linked in place only when complete (nothing is visible before, nothing
    is left by a killed writer); elsewhere a named temporary file (see :func:`remove_stale_temporaries`). An
    ``OSError`` or other ``Exception`` becomes ``error`` naming the file; an :class:`EmbplanError` passes through.
    """
    with atomic_files([(path, what)], error=error) as (fh,):
        yield fh


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, fsync it and move it over ``path``.

    For writers that need a path rather than a file object (prefer :func:`atomic_file`). The temporary file is
    ``.<name>.<pid>.<random>.tmp`` in the target's folder (so that :func:`os.replace` never crosses file systems;
    one left by a killed writer is removed by the next write there). Any exception inside the block, or while
    committing, removes the temporary file; an ``OSError`` or other ``Exception`` is raised again as ``error``
    naming the file, an :class:`EmbplanError` passes through unchanged, and ``KeyboardInterrupt`` etc. propagate.
    """
    target = check_output_path(path, error=error, what=what)
    folder = target.parent
    remove_stale_temporaries(folder)
    try:
        fd, tmp = _named_temporary(target)
    except OSError as exc:
        raise error(output_error(target, what, exc)) from exc
    os.close(fd)
    committed = False
    try:
        os.chmod(tmp, _final_mode(target))  # mkstemp makes 0600; give the file the mode a plain open() would
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        committed = True
        fsync_path(folder, directory=True)
    except EmbplanError:
        raise
    except Exception as exc:
        raise error(output_error(target, what, exc)) from exc
    finally:
        if not committed:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    log.debug("wrote %s", target)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); return the path."""
    with atomic_file(path, error=error, what=what) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), error=error, what=what)
