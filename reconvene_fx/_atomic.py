"""Writing output files atomically: whole new file or the old one, never a partial one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "check_writable"]


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a path to write ``path``'s content to; it replaces ``path`` only on success.

    The yielded path lies in a fresh hidden folder beside ``path`` (same file system, so
    the final ``os.replace`` is atomic). Files written next to it there (an ONNX file's
    external data) are moved beside ``path`` first, ``path`` itself last. On any error,
    an interrupt included, the folder is removed and an existing ``path`` is left as it
    was; a killed process leaves at most the hidden folder behind, never a partial
    ``path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     target = Path(d) / "out.txt"
        ...     with atomic_write(target) as tmp:
        ...         _ = tmp.write_text("new")
        ...     print(target.read_text(), sorted(p.name for p in Path(d).iterdir()))
        new ['out.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        target = folder / path.name
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written for {path}")
        for extra in folder.iterdir():
            if extra != target:
                os.replace(extra, path.parent / extra.name)
        os.replace(target, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_writable(path: str | os.PathLike) -> Path:
    """Raise a one-line ``OSError`` naming the problem when ``path`` cannot be written
    (a folder in its place, a parent that is a file, no write permission); else return
    it as a :class:`~pathlib.Path`. Nothing is created.

    Example:
        >>> check_writable("/proc/version/model.onnx")
        Traceback (most recent call last):
        ...
        NotADirectoryError: cannot write /proc/version/model.onnx: /proc/version is not a folder
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no permission to write in {ancestor}")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot write {path}: the file is read-only")
    return path
