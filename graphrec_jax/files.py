"""Writing files so that a crash never leaves half of one: write to a temporary file beside the
target, flush it to disk, rename it over the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replaces `path` with `data` (text is UTF-8): readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, file_mode(path))  # mkstemp's 0600 would hide the file from the group
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def file_mode(path: Path) -> int:
    """The mode `path` keeps when it exists, else what `open` would give a new file (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets it to read it,
    which would race with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of `path` and its parents that exists, when it is not a directory (a file where
    a folder is to be made or used); None when `path` is or can become a folder."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else folder
    return None
