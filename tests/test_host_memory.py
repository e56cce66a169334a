"""The malloc huge-page setting: when it applies, and that the re-exec really happens."""

import os
import subprocess
import sys

import pytest

from graphrec_jax import host_memory


def test_tunable_is_added_once_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(host_memory, "huge_pages_available", lambda: True)
    added = host_memory.environment_with_huge_pages({"PATH": "/bin"})
    assert added == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert host_memory.environment_with_huge_pages(added) is None
    kept = host_memory.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert host_memory.environment_with_huge_pages({"GRAPHREC_HUGEPAGES": "0"}) is None
    monkeypatch.setattr(host_memory, "huge_pages_available", lambda: False)
    assert host_memory.environment_with_huge_pages({}) is None


@pytest.mark.skipif(not host_memory.huge_pages_available(), reason="no transparent huge pages on this machine")
def test_process_restarts_with_the_tunable_and_its_arguments():
    program = (
        "import os, sys; from graphrec_jax.host_memory import use_huge_pages; use_huge_pages(); "
        "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GRAPHREC_HUGEPAGES")}
    result = subprocess.run(
        [sys.executable, "-c", program, "a", "b"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "glibc.malloc.hugetlb=1 ['a', 'b']"
