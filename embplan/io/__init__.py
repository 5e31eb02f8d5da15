"""embplan.io: the plan archive (:mod:`embplan.io.hdf5`) and atomic file output.

:func:`atomic_output` is the one way embplan writes a file: a temporary file in the target's folder, written,
flushed and fsynced, then moved over the target with :func:`os.replace` (atomic on POSIX and Windows), and the
folder fsynced. A failure at any point leaves an earlier file intact and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import EmbplanError

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "check_output_path", "fsync_path"]

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


def check_output_path(
    path: str | os.PathLike[str], *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Raise ``error`` unless ``path`` can be written: its folder exists and it is not a folder itself."""
    target = Path(path)
    if not target.parent.is_dir():
        raise error(f"{target}: cannot write {what}: folder {target.parent} does not exist")
    if target.is_dir():
        raise error(f"{target}: cannot write {what}: it is a folder")
    return target


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, fsync it and move it over ``path``.

    The temporary file is ``.<name>.<random>.tmp`` in the target's folder (so that :func:`os.replace` never
    crosses file systems). Any exception inside the block, or while committing, removes the temporary file; an
    ``OSError`` or other ``Exception`` is raised again as ``error`` (an :class:`EmbplanError` subclass) naming
    the file, an :class:`EmbplanError` passes through unchanged, and ``KeyboardInterrupt`` etc. propagate.
    """
    target = check_output_path(path, error=error, what=what)
    folder = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise error(f"{target}: cannot write {what}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
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
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise error(f"{target}: cannot write {what}: {reason}") from exc
    finally:
        if not committed:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    log.debug("wrote %s", target)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); return the path."""
    with atomic_output(path, error=error, what=what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, error: type[EmbplanError] = EmbplanError, what: str = "file"
) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), error=error, what=what)
