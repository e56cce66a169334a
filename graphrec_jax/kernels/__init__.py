"""Fast graph propagation and top-K scoring ops: native CPU kernels with XLA fallbacks.

`csr_matmul`, `csr_matmul_rows`, `take_rows` and `top_k_scores` are jittable and run a native C++ kernel
(compiled on first use, see `native.py`) when lowered for CPU, and XLA's own ops elsewhere.
"""

from graphrec_jax.kernels.native import native_available, set_num_threads, unavailable_reason
from graphrec_jax.kernels.ops import BACKENDS, csr_matmul, csr_matmul_rows, take_rows, top_k_scores

__all__ = [
    "BACKENDS",
    "csr_matmul",
    "csr_matmul_rows",
    "native_available",
    "set_num_threads",
    "take_rows",
    "top_k_scores",
    "unavailable_reason",
]
