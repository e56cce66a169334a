"""Host allocator setting for CPU training: transparent huge pages for glibc malloc.

XLA's CPU runtime allocates a step's large temporary buffers with malloc, and glibc serves
buffers of tens of megabytes with fresh `mmap`s that are unmapped again when freed, so every
step page-faults them in again, 4 KiB at a time. With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
malloc asks the kernel for transparent huge pages (`madvise`), and the faults come 2 MiB at a
time: on Gowalla full-graph LightGCN this takes a 2-core CPU step from about 137 ms to about
110 ms (docs/BENCHMARKS.md). glibc reads the tunable only when a process starts, so the
setting takes a re-exec of the process with the variable added.

Scripts call `use_huge_pages()` first thing; `GRAPHREC_HUGEPAGES=0` turns it off. It changes
nothing when the variable is already set, off Linux, or where the kernel has transparent
huge pages turned off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_available() -> bool:
    """True on Linux with transparent huge pages in `always` or `madvise` mode."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        setting = _THP_SETTING.read_text()
    except OSError:
        return False
    return "[never]" not in setting


def environment_with_huge_pages(environment: dict[str, str]) -> dict[str, str] | None:
    """`environment` with the malloc tunable added, or None when nothing needs to change."""
    if environment.get("GRAPHREC_HUGEPAGES", "1") == "0":
        return None
    current = environment.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current or not huge_pages_available():
        return None
    return {**environment, "GLIBC_TUNABLES": f"{current}:{TUNABLE}" if current else TUNABLE}


def use_huge_pages() -> None:
    """Re-executes this process with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` when that helps.

    Call it before any work (it restarts the process with the same interpreter and
    arguments); it returns at once when the setting is already in place or does not apply.
    """
    environment = environment_with_huge_pages(dict(os.environ))
    if environment is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
