"""Building, caching and loading the native CPU kernels in `graph_kernels.cc`.

The C++ source is compiled on first use with the system compiler and cached as
`<cache>/<hash>.so`, where `<cache>` is `$GRAPHREC_KERNEL_CACHE` or
`~/.cache/graphrec_jax/kernels` and the hash covers the source, the compiler command and
flags, the compiler version, the jaxlib version and the CPU (the build uses
`-march=native`). The library is written to a temporary file and renamed into place, so
processes building at the same time never load a half-written file. Its FFI handlers are
registered with XLA for the CPU platform.

Loading a library runs its code, and the file name is computed from public inputs, so the
cache must be private: the directory is created 0700, and one owned by another user or
writable by group or others is refused (the XLA path runs, with a warning naming the
directory). Each build records the sha256 of the library beside it (`<hash>.so.sha256`,
written atomically); a library whose bytes no longer match its record, or that has none,
is rebuilt before it is loaded. Builds of one library are serialised by a lock file.

Environment:
  GRAPHREC_NATIVE_KERNELS=0  never use the native kernels (the XLA path runs everywhere).
  GRAPHREC_NUM_THREADS=N     threads per kernel call (default: OpenMP's, i.e. OMP_NUM_THREADS
                             or the core count).
  GRAPHREC_KERNEL_CACHE=DIR  where compiled libraries are kept.
  CXX                        the compiler (default g++).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax
import jaxlib

SOURCE = Path(__file__).with_name("graph_kernels.cc")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=fast")

# FFI target name -> exported handler symbol in the shared library.
TARGETS = {
    "graphrec_csr_matmul": "GraphrecCsrMatmul",
    "graphrec_csr_matmul_rows": "GraphrecCsrMatmulRows",
    "graphrec_csr_scatter_rows": "GraphrecCsrScatterRows",
    "graphrec_top_k_scores": "GraphrecTopKScores",
}

_lock = threading.Lock()


class _Loaded:
    """The outcome of the one build-and-load attempt of this process."""

    library: ctypes.CDLL | None = None
    error: str | None = None
    attempted = False


def native_enabled() -> bool:
    """False when `GRAPHREC_NATIVE_KERNELS` is set to 0/false/no/off."""
    value = os.environ.get("GRAPHREC_NATIVE_KERNELS", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def native_available() -> bool:
    """True when the native CPU kernels are enabled, built and registered with XLA.

    The first call compiles (or loads from the cache) and registers the kernels; if that fails
    it warns once, naming what failed, and every op falls back to its XLA implementation.
    """
    return native_enabled() and load() is not None


def unavailable_reason() -> str:
    """Why `native_available()` is False (empty when it is True)."""
    if not native_enabled():
        return "GRAPHREC_NATIVE_KERNELS=0 disables them"
    if load() is None:
        return _Loaded.error or "unknown"
    return ""


def load() -> ctypes.CDLL | None:
    """Builds (or reuses the cached build of) the kernels and registers them; None on failure."""
    with _lock:
        if not _Loaded.attempted:
            _Loaded.attempted = True
            try:
                _Loaded.library = _build_and_register()
            except Exception as error:  # any failure means: use the XLA path, and say why once
                _Loaded.error = str(error)
                warnings.warn(
                    f"graphrec_jax.kernels: native CPU kernels unavailable ({error}); "
                    "using the slower XLA implementations instead.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _Loaded.library


def cache_dir() -> Path:
    root = os.environ.get("GRAPHREC_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "graphrec_jax" / "kernels"


def unsafe_reason(path: Path, uid: int | None = None) -> str:
    """Why another user could replace files at `path` (empty when only `uid` can).

    `path` is a directory (or a file in one) that must be owned by `uid` (default: this
    process's user) and writable by nobody else. Symlinks are followed: what counts is the
    directory the files land in.
    """
    uid = os.getuid() if uid is None else uid
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot be inspected ({error.strerror})"
    if info.st_uid != uid:
        return f"is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):#o})"
    return ""


def private_cache_dir() -> Path:
    """`cache_dir()`, created 0700 if missing; raises RuntimeError if another user could write to it."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"kernel cache {directory} cannot be created ({error.strerror})") from error
    problem = unsafe_reason(directory)
    if not problem and not directory.is_dir():
        problem = "is not a directory"
    if problem:
        raise RuntimeError(
            f"kernel cache {directory} {problem}; a library there could be replaced by someone else, so it is "
            f"not used: run `chmod 700 {directory}` if it is yours, or set GRAPHREC_KERNEL_CACHE to a private directory"
        )
    return directory


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++"))


@functools.cache
def _compiler_version(compiler: tuple[str, ...]) -> str:
    try:
        result = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"C++ compiler {' '.join(compiler)!r} not runnable: {error}") from error
    if result.returncode != 0:
        raise RuntimeError(f"C++ compiler {' '.join(compiler)!r} failed: {result.stderr.strip()}")
    return result.stdout.splitlines()[0] if result.stdout else ""


def _cpu_identity() -> str:
    """The CPU model and feature flags, since `-march=native` code may not run on another CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def library_path(directory: Path | None = None) -> Path:
    """Where this source, compiler, jaxlib and CPU combination is cached (in `cache_dir()` by default)."""
    compiler = tuple(_compiler())
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(compiler + FLAGS).encode(),
        _compiler_version(compiler).encode(),
        jaxlib.__version__.encode(),
        _cpu_identity().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return (cache_dir() if directory is None else directory) / f"{key.hexdigest()[:24]}.so"


def record_path(library: Path) -> Path:
    """The file holding the sha256 of `library` as built: `<library>.sha256`."""
    return library.with_name(library.name + ".sha256")


def _file_digest(path: Path | str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def verified(library: Path) -> bool:
    """True when `library` and its record are private files and the library's sha256 matches the record."""
    record = record_path(library)
    if unsafe_reason(library) or unsafe_reason(record):
        return False
    try:
        return record.read_text().strip() == _file_digest(library)
    except OSError:
        return False


def _write_atomically(target: Path, data: bytes) -> None:
    """Writes `data` to a private temporary file beside `target`, then renames it into place."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _compile(target: Path) -> None:
    """Builds the library into `target` and records its sha256 (both private to this user)."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
    os.close(handle)
    command = [*_compiler(), *FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", temporary]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"compiling {SOURCE.name} failed: {' '.join(command)}\n{tail}")
        os.chmod(temporary, 0o700)  # the linker may have created it group- or world-writable
        digest = _file_digest(temporary)
        os.replace(temporary, target)  # atomic: readers see the old file or the whole new one
        _write_atomically(record_path(target), f"{digest}\n".encode())
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@contextlib.contextmanager
def _build_lock(library: Path) -> Iterator[None]:
    """Holds an exclusive lock on `<library>.lock`, so one process at a time checks and builds it."""
    import fcntl  # POSIX only; elsewhere the ImportError means: use the XLA path

    descriptor = os.open(library.with_name(library.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _load_verified(path: Path) -> ctypes.CDLL:
    """Builds `path` unless it matches its record, then loads it, holding the build lock throughout."""

    def checked_load() -> ctypes.CDLL:
        if not verified(path):
            raise RuntimeError(
                f"{path} does not match its sha256 record {record_path(path)} although the build lock is held; "
                "another process changed it: delete both files and run again"
            )
        return ctypes.CDLL(str(path))

    with _build_lock(path):
        if not verified(path):  # never built, built by an older version, damaged or changed
            _compile(path)
        try:
            return checked_load()
        except OSError:  # a library that does not load here: build it again, once
            _compile(path)
            return checked_load()


def _declare_settings(library: ctypes.CDLL) -> None:
    """The C signatures of the host-side settings, declared once when the library loads."""
    library.graphrec_set_num_threads.argtypes = [ctypes.c_int]
    library.graphrec_top_k_screening_built.restype = ctypes.c_int
    library.graphrec_set_top_k_screening.argtypes = [ctypes.c_int]


def _build_and_register() -> ctypes.CDLL:
    library = _load_verified(library_path(private_cache_dir()))
    _declare_settings(library)
    threads = os.environ.get("GRAPHREC_NUM_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise RuntimeError(f"GRAPHREC_NUM_THREADS={threads!r} is not a positive integer")
        set_num_threads(int(threads), library)
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return library


def set_num_threads(num_threads: int, library: ctypes.CDLL | None = None) -> None:
    """Threads used by each native kernel call from now on; 0 restores OpenMP's default.

    Not jittable (a host-side setting); takes effect for already compiled functions too.
    """
    library = library or load()
    if library is None:
        return
    library.graphrec_set_num_threads(int(num_threads))


def top_k_screening_built() -> bool:
    """True when the native top-k has its bfloat16 screen (built for a CPU with AVX512-BF16).

    The screen scores in bfloat16, keeps every item whose bounded error could reach the top k,
    and scores those again in fp32: the results equal the fp32 kernel's, at about half the
    arithmetic (`graph_kernels.cc`, "Screened top-k").
    """
    library = load()
    if library is None:
        return False
    return bool(library.graphrec_top_k_screening_built())


def set_top_k_screening(enabled: bool) -> None:
    """Whether native top-k calls use the bfloat16 screen where built (the default: on).

    The results are the same either way; turning it off measures or checks the fp32 path. Not
    jittable (a host-side setting); takes effect for already compiled functions too.
    """
    library = load()
    if library is None:
        return
    library.graphrec_set_top_k_screening(int(bool(enabled)))
