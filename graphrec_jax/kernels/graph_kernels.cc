// CPU kernels for graph propagation and top-K scoring, exposed as XLA typed-FFI handlers.
//
// Compiled on first use by graphrec_jax/kernels/native.py with
//   g++ -O3 -march=native -fopenmp -shared -fPIC -std=c++17 -ffp-contract=fast
// and called through jax.ffi.ffi_call from graphrec_jax/kernels/ops.py, which validates
// shapes and dtypes before the call. Index values (offsets, neighbours, rows) can only be
// seen here, so every kernel checks them and returns an InvalidArgument error instead of
// reading out of bounds.
//
// Handlers (all CPU, all float32 data with int32 indices):
//   GraphrecCsrMatmul      y[r]  = sum_j weights[j] * x[neighbors[j]], j in row r
//   GraphrecCsrMatmulRows  y[i]  = the same for row rows[i] only
//   GraphrecCsrScatterRows xbar  = transpose of CsrMatmulRows (the gradient w.r.t. x)
//   GraphrecTopKScores     exact top-k of queries @ items.T + bias, minus excluded pairs
//                          (screened in bfloat16 where the CPU has AVX512-BF16, same result)
// and one plain C function for the host (ctypes):
//   graphrec_sample_uniform  a uniform 1- or 2-hop neighbourhood subgraph (graph/subgraphs.py)

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 0 means "OpenMP's default" (OMP_NUM_THREADS or the core count).
std::atomic<int> g_num_threads{0};

int NumThreads() {
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// Offsets must start at >= 0, never decrease, and end inside the index array. Entries
// before offsets[0] or after offsets[n_rows] belong to no row (callers pad with them).
ffi::Error CheckOffsets(const int32_t* offsets, int64_t n_rows, int64_t nnz, const char* op,
                        const char* name) {
  auto fail = [&](const std::string& what) {
    return ffi::Error::InvalidArgument(std::string(op) + ": " + name + " " + what);
  };
  if (offsets[0] < 0) return fail("starts below 0; CSR offsets must start at 0");
  for (int64_t r = 0; r < n_rows; ++r) {
    if (offsets[r + 1] < offsets[r]) {
      return fail("decreases at position " + std::to_string(r + 1) +
                  "; CSR offsets must be non-decreasing");
    }
  }
  if (offsets[n_rows] > nnz) {
    return fail("ends at " + std::to_string(offsets[n_rows]) + " but the index array holds only " +
                std::to_string(nnz) + " entries");
  }
  return ffi::Error::Success();
}

ffi::Error CheckRows(const int32_t* rows, int64_t count, int64_t n_rows, const char* op) {
  for (int64_t i = 0; i < count; ++i) {
    if (rows[i] < 0 || rows[i] >= n_rows) {
      return ffi::Error::InvalidArgument(std::string(op) + ": rows[" + std::to_string(i) + "] = " +
                                         std::to_string(rows[i]) + " is outside [0, " +
                                         std::to_string(n_rows) + ")");
    }
  }
  return ffi::Error::Success();
}

ffi::Error NeighborError(const char* op, int64_t n_cols) {
  return ffi::Error::InvalidArgument(std::string(op) + ": neighbors holds a column index outside [0, " +
                                     std::to_string(n_cols) + "); check the graph's CSR arrays");
}

// ---------------------------------------------------------------------------------------------
// Sparse (CSR) x dense. Each output row is accumulated in a local array that the compiler keeps
// in vector registers (d is a compile-time constant for the common widths), so y is written
// once and never read. The gather x[neighbors[j]] is the cost: rows of x are scattered over
// memory, so we prefetch the row needed a few edges ahead, all of its cache lines, to overlap
// the memory latency with the FMAs of the current edge. When all rows are computed in order,
// the look-ahead runs on into the next row's edges, so rows do not start cold.
// ---------------------------------------------------------------------------------------------

constexpr int kPrefetchDistance = 4;

template <int D>  // D > 0: compile-time width; D == 0: runtime width `d`.
bool SpmmRows(const int32_t* offsets, const int32_t* neighbors, const float* weights, const float* x,
              int64_t n_cols, int64_t d_runtime, const int32_t* rows, int64_t n_out, float* y) {
  const int64_t d = D > 0 ? D : d_runtime;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  const int32_t all_rows_end = rows == nullptr ? offsets[n_out] : 0;
  bool bad_neighbor = false;
  // Dynamic scheduling: degrees follow a power law, so equal row counts are unequal work.
#pragma omp parallel for schedule(dynamic, 64) num_threads(NumThreads()) reduction(|| : bad_neighbor)
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t r = rows != nullptr ? rows[i] : i;
    const int32_t begin = offsets[r], end = offsets[r + 1];
    const int32_t prefetch_end = rows != nullptr ? end : all_rows_end;
    if (rows != nullptr && i + 2 < n_out) {
      // Selected rows sit anywhere in the CSR: fetch the neighbour lists two rows ahead.
      const int32_t ahead = offsets[rows[i + 2]];
      __builtin_prefetch(neighbors + ahead);
      __builtin_prefetch(weights + ahead);
      __builtin_prefetch(offsets + rows[i + 3 < n_out ? i + 3 : i + 2]);
    }
    float* out = y + i * d;
    float local[D > 0 ? D : 1];
    float* acc = D > 0 ? local : out;  // runtime width: accumulate in place (the row is in L1)
    for (int64_t c = 0; c < d; ++c) acc[c] = 0.0f;
    for (int32_t j = begin; j < end; ++j) {
      if (j + kPrefetchDistance < prefetch_end) {
        // A prefetch never faults, so an invalid index here is harmless; it is caught below.
        const char* ahead = reinterpret_cast<const char*>(
            x + static_cast<int64_t>(neighbors[j + kPrefetchDistance]) * d);
        for (int64_t byte = 0; byte < row_bytes; byte += 64) __builtin_prefetch(ahead + byte);
      }
      const int32_t col = neighbors[j];
      if (col < 0 || col >= n_cols) {
        bad_neighbor = true;
        continue;
      }
      const float w = weights[j];
      const float* x_row = x + static_cast<int64_t>(col) * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) acc[c] += w * x_row[c];
    }
    if (D > 0) std::memcpy(out, acc, row_bytes);
  }
  return !bad_neighbor;
}

bool Spmm(const int32_t* offsets, const int32_t* neighbors, const float* weights, const float* x,
          int64_t n_cols, int64_t d, const int32_t* rows, int64_t n_out, float* y) {
  switch (d) {
    case 32:
      return SpmmRows<32>(offsets, neighbors, weights, x, n_cols, d, rows, n_out, y);
    case 64:
      return SpmmRows<64>(offsets, neighbors, weights, x, n_cols, d, rows, n_out, y);
    case 128:
      return SpmmRows<128>(offsets, neighbors, weights, x, n_cols, d, rows, n_out, y);
    default:
      return SpmmRows<0>(offsets, neighbors, weights, x, n_cols, d, rows, n_out, y);
  }
}

ffi::Error CsrMatmulImpl(ffi::BufferR1<ffi::S32> offsets, ffi::BufferR1<ffi::S32> neighbors,
                         ffi::BufferR1<ffi::F32> weights, ffi::BufferR2<ffi::F32> x,
                         ffi::ResultBufferR2<ffi::F32> y) {
  const int64_t n_rows = offsets.element_count() - 1;
  const int64_t n_cols = x.dimensions()[0], d = x.dimensions()[1];
  if (auto error = CheckOffsets(offsets.typed_data(), n_rows, neighbors.element_count(), "csr_matmul",
                                "offsets");
      error.failure()) {
    return error;
  }
  if (!Spmm(offsets.typed_data(), neighbors.typed_data(), weights.typed_data(), x.typed_data(), n_cols,
            d, nullptr, n_rows, y->typed_data())) {
    return NeighborError("csr_matmul", n_cols);
  }
  return ffi::Error::Success();
}

ffi::Error CsrMatmulRowsImpl(ffi::BufferR1<ffi::S32> offsets, ffi::BufferR1<ffi::S32> neighbors,
                             ffi::BufferR1<ffi::F32> weights, ffi::BufferR2<ffi::F32> x,
                             ffi::BufferR1<ffi::S32> rows, ffi::ResultBufferR2<ffi::F32> y) {
  const int64_t n_rows = offsets.element_count() - 1;
  const int64_t n_cols = x.dimensions()[0], d = x.dimensions()[1];
  const int64_t n_out = rows.element_count();
  if (auto error = CheckOffsets(offsets.typed_data(), n_rows, neighbors.element_count(),
                                "csr_matmul_rows", "offsets");
      error.failure()) {
    return error;
  }
  if (auto error = CheckRows(rows.typed_data(), n_out, n_rows, "csr_matmul_rows"); error.failure()) {
    return error;
  }
  if (!Spmm(offsets.typed_data(), neighbors.typed_data(), weights.typed_data(), x.typed_data(), n_cols,
            d, rows.typed_data(), n_out, y->typed_data())) {
    return NeighborError("csr_matmul_rows", n_cols);
  }
  return ffi::Error::Success();
}

// xbar[neighbors[j]] += weights[j] * ybar[i] for every edge j of row rows[i]. Threads split
// the *destination* rows of xbar into contiguous ranges and each thread walks all the edges,
// applying only those that land in its range: no two threads write the same row, so no
// atomics, and every destination sums its terms in edge order, so the result is identical for
// any thread count. Walking the edge list once per thread is cheap next to the d-wide
// read-modify-writes, whose destination rows are prefetched a few edges ahead.
template <int D>
bool ScatterRows(const int32_t* offsets, const int32_t* neighbors, const float* weights, const int32_t* rows,
                 int64_t n_out, const float* ybar, int64_t n_cols, int64_t d_runtime, float* xbar) {
  const int64_t d = D > 0 ? D : d_runtime;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  bool bad_neighbor = false;
#pragma omp parallel num_threads(NumThreads()) reduction(|| : bad_neighbor)
  {
    const int64_t num_threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const int64_t first = n_cols * thread / num_threads, last = n_cols * (thread + 1) / num_threads;
    std::memset(xbar + first * d, 0, (last - first) * row_bytes);
    for (int64_t i = 0; i < n_out; ++i) {
      if (i + 2 < n_out) {  // the neighbour lists two rows ahead, as in SpmmRows
        const int32_t ahead = offsets[rows[i + 2]];
        __builtin_prefetch(neighbors + ahead);
        __builtin_prefetch(weights + ahead);
        __builtin_prefetch(offsets + rows[i + 3 < n_out ? i + 3 : i + 2]);
      }
      const float* g = ybar + i * d;
      const int32_t begin = offsets[rows[i]], end = offsets[rows[i] + 1];
      for (int32_t j = begin; j < end; ++j) {
        if (j + kPrefetchDistance < end) {
          const int32_t ahead = neighbors[j + kPrefetchDistance];
          if (ahead >= first && ahead < last) {
            const char* row = reinterpret_cast<const char*>(xbar + static_cast<int64_t>(ahead) * d);
            for (int64_t byte = 0; byte < row_bytes; byte += 64) __builtin_prefetch(row + byte, 1);
          }
        }
        const int32_t col = neighbors[j];
        if (col < first || col >= last) {
          if (col < 0 || col >= n_cols) bad_neighbor = true;
          continue;
        }
        const float w = weights[j];
        float* out = xbar + static_cast<int64_t>(col) * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) out[c] += w * g[c];
      }
    }
  }
  return !bad_neighbor;
}

ffi::Error CsrScatterRowsImpl(ffi::BufferR1<ffi::S32> offsets, ffi::BufferR1<ffi::S32> neighbors,
                              ffi::BufferR1<ffi::F32> weights, ffi::BufferR1<ffi::S32> rows,
                              ffi::BufferR2<ffi::F32> ybar, ffi::ResultBufferR2<ffi::F32> xbar) {
  const int64_t n_rows = offsets.element_count() - 1;
  const int64_t n_out = rows.element_count(), d = ybar.dimensions()[1];
  const int64_t n_cols = xbar->dimensions()[0];
  if (auto error = CheckOffsets(offsets.typed_data(), n_rows, neighbors.element_count(), "csr_matmul_rows",
                                "offsets");
      error.failure()) {
    return error;
  }
  if (auto error = CheckRows(rows.typed_data(), n_out, n_rows, "csr_matmul_rows"); error.failure()) {
    return error;
  }
  const auto scatter = d == 64 ? ScatterRows<64> : ScatterRows<0>;
  if (!scatter(offsets.typed_data(), neighbors.typed_data(), weights.typed_data(), rows.typed_data(), n_out,
               ybar.typed_data(), n_cols, d, xbar->typed_data())) {
    return NeighborError("csr_matmul_rows", n_cols);
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Top-k scoring: scores = queries @ items.T + bias, excluded pairs removed, exact top-k per
// query. Scoring is fused with selection so the [b, n] score matrix never exists:
//
//  * Register blocking. A micro-tile is kQueryVectors * kLanes queries (one SIMD lane per
//    query) by kItemsPerStep items, kept in kQueryVectors * kItemsPerStep vector accumulators.
//    Per feature it loads kQueryVectors vectors of the packed query panel ([d][queries]) and
//    broadcasts one float of each item row, so items are read straight from their row-major
//    [n, d] layout with no repacking. With AVX-512 this is 32 queries x 12 items = 24 zmm
//    accumulators and two FMAs per broadcast: FMA-bound, not load-bound.
//  * Cache blocking. Items are swept in tiles that stay in L2 while every micro-tile of the
//    thread's query block passes over them, so each item row comes from memory once per
//    query block instead of once per query.
//  * Threshold. Each query keeps the score to beat (its k-th best so far) in a lane of a
//    vector, so one compare per accumulator finds the few items that could enter a top-k
//    (about k * (1 + ln(n / k)) per query for random data); only those reach the scalar path
//    (exclusion check, insertion). Each query sees items in increasing index order, so a
//    candidate that merely ties the k-th best has a higher index and rightly loses: the
//    strict ">" implements "ties: lower item index first".
// ---------------------------------------------------------------------------------------------

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kItemsPerStep = 12;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kItemsPerStep = 6;  // 16 ymm registers: 12 accumulators + 2 queries + 1 broadcast
#else
constexpr int kLanes = 4;
constexpr int kItemsPerStep = 4;
#endif
constexpr int kQueryVectors = 2;
constexpr int kMicroQueries = kQueryVectors * kLanes;
constexpr int kMaxBlockQueries = 256;
constexpr int64_t kItemTileBytes = 256 * 1024;  // a quarter of a Skylake-SP L2

// may_alias: panels and thresholds are written as floats and read as vectors.
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), __may_alias__));

// Bit q set when lane q of a is greater than lane q of b (false for NaN).
inline uint32_t LanesGreater(Vec a, Vec b) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b), _CMP_GT_OQ);
#elif defined(__AVX__)
  return _mm256_movemask_ps(_mm256_cmp_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b),
                                          _CMP_GT_OQ));
#else
  uint32_t mask = 0;
  for (int lane = 0; lane < kLanes; ++lane) mask |= static_cast<uint32_t>(a[lane] > b[lane]) << lane;
  return mask;
#endif
}

// One query's best items so far, sorted by descending score, written straight into its rows
// of the outputs. A sorted array rather than a heap: a new candidate usually lands near the
// end, so the backward scan is short and nearly branch-free, and no final sort is needed.
struct QueryState {
  float* scores;   // [k]
  int32_t* items;  // [k]
  int64_t size;
  const int32_t* excluded_begin;  // the query's excluded items, see IsExcluded
  const int32_t* excluded_end;
};

typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t)), __may_alias__));
constexpr int64_t kMaxScannedExclusions = 8 * kLanes;

// Bit l set when lane l of a equals b.
inline uint32_t LanesEqual(IntVec a, int32_t b) {
#if defined(__AVX512F__)
  return _mm512_cmpeq_epi32_mask(reinterpret_cast<__m512i>(a), _mm512_set1_epi32(b));
#elif defined(__AVX2__)
  const __m256i equal = _mm256_cmpeq_epi32(reinterpret_cast<__m256i>(a), _mm256_set1_epi32(b));
  return _mm256_movemask_ps(_mm256_castsi256_ps(equal));
#else
  uint32_t mask = 0;
  for (int lane = 0; lane < kLanes; ++lane) mask |= static_cast<uint32_t>(a[lane] == b) << lane;
  return mask;
#endif
}

// A query's excluded items are usually a few dozen (its training items): a branch-free vector
// scan beats a binary search and its mispredicted branches. The lists are sorted and padded
// with -1 (never an item) to whole vectors; long ones are binary-searched.
inline bool IsExcluded(const int32_t* begin, const int32_t* end, int32_t item) {
  if (end - begin > kMaxScannedExclusions) return std::binary_search(begin, end, item);
  uint32_t found = 0;
  for (const int32_t* excluded = begin; excluded < end; excluded += kLanes) {
    found |= LanesEqual(*reinterpret_cast<const IntVec*>(excluded), item);
  }
  return found != 0;
}

struct BlockState {
  std::vector<QueryState> queries;
  // Per query lane, the score to beat: -inf until k items are held, +inf for the padding
  // lanes of the last micro-tile (so they never produce candidates). Stored as vectors,
  // read a vector at a time.
  std::vector<Vec> threshold_vectors;
  float* threshold;
  int64_t k;

  // Thresholds at -inf for the block's `count` queries (+inf for the padding lanes up to
  // `padded`), and each query's output rows and excluded items: sorted, padded with -1 to whole
  // vectors (see IsExcluded), held in `storage`.
  void Prepare(const int32_t* exclude_offsets, const int32_t* exclude_items, int64_t first, int64_t count,
               int64_t padded, int64_t k_, float* out_scores, int32_t* out_indices, std::vector<IntVec>* storage) {
    k = k_;
    threshold_vectors.resize(padded / kLanes);
    threshold = reinterpret_cast<float*>(threshold_vectors.data());
    std::fill(threshold, threshold + padded, kInf);
    std::fill(threshold, threshold + count, -kInf);
    std::vector<int64_t> excluded_start(count + 1, 0);
    for (int64_t q = 0; q < count; ++q) {
      const int64_t length = exclude_offsets[first + q + 1] - exclude_offsets[first + q];
      excluded_start[q + 1] = excluded_start[q] + (length + kLanes - 1) / kLanes * kLanes;
    }
    storage->assign(excluded_start[count] / kLanes, IntVec{});
    int32_t* excluded = reinterpret_cast<int32_t*>(storage->data());
    std::fill(excluded, excluded + excluded_start[count], -1);
    queries.resize(count);
    for (int64_t q = 0; q < count; ++q) {
      const int32_t* source = exclude_items + exclude_offsets[first + q];
      int32_t* begin = excluded + excluded_start[q];
      int32_t* end = std::copy(source, exclude_items + exclude_offsets[first + q + 1], begin);
      std::sort(begin, end);
      // Binary search needs the exact range; the vector scan reads the padding too.
      if (end - begin <= kMaxScannedExclusions) end = excluded + excluded_start[q + 1];
      queries[q] = QueryState{out_scores + (first + q) * k, out_indices + (first + q) * k, 0, begin, end};
    }
  }

  // Requires that this query's candidates arrive in increasing item order.
  void Offer(int64_t q, float score, int64_t item_index) {
    const int32_t item = static_cast<int32_t>(item_index);
    QueryState& state = queries[q];
    if (state.size == k && !(score > state.scores[k - 1])) return;  // a stale threshold lane
    if (IsExcluded(state.excluded_begin, state.excluded_end, item)) return;
    int64_t slot = state.size < k ? state.size++ : k - 1;  // when full, drop the worst
    // Stop at an equal score: the earlier (lower-index) item stays ahead.
    for (; slot > 0 && state.scores[slot - 1] < score; --slot) {
      state.scores[slot] = state.scores[slot - 1];
      state.items[slot] = state.items[slot - 1];
    }
    state.scores[slot] = score;
    state.items[slot] = item;
    if (state.size == k) threshold[q] = state.scores[k - 1];
  }
};

// The slow path of a micro-tile, taken when some score beats its query's threshold: offers
// those (query, item) pairs, item by item, to `block` (BlockState here; the bfloat16 screen's
// ScreenBlock below, with upper bounds for scores and sweep positions for items). Out of line,
// so that the fast path stays small and keeps its accumulators in registers. The thresholds are
// read once: Offer raises them lane by lane, and reloading a vector just written as floats would
// stall on store forwarding; a stale (lower) threshold only lets through a pair that Offer then
// rejects.
template <int NumItems, class Block>
__attribute__((noinline)) void OfferCandidates(const Vec (&scores)[kQueryVectors][NumItems], int64_t item,
                                               int64_t first_query, Block& block) {
  Vec threshold[kQueryVectors];
  std::memcpy(threshold, block.threshold + first_query, sizeof(threshold));
  for (int i = 0; i < NumItems; ++i) {
    for (int v = 0; v < kQueryVectors; ++v) {
      for (uint32_t mask = LanesGreater(scores[v][i], threshold[v]); mask != 0; mask &= mask - 1) {
        const int lane = __builtin_ctz(mask);
        block.Offer(first_query + v * kLanes + lane, scores[v][i][lane], item + i);
      }
    }
  }
}

// One micro-tile: queries [first_query, first_query + kMicroQueries) of the block (their
// panel is `panel`, [d][kMicroQueries]) against NumItems consecutive items from `item`.
template <int D, int NumItems>
inline void MicroTile(const Vec* panel, const float* items, const float* bias, int64_t d_runtime,
                      int64_t item, int64_t first_query, BlockState& block) {
  const int64_t d = D > 0 ? D : d_runtime;
  const float* rows = items + item * d;
  Vec acc[kQueryVectors][NumItems];
#pragma GCC unroll 16
  for (int v = 0; v < kQueryVectors; ++v) {
#pragma GCC unroll 16
    for (int i = 0; i < NumItems; ++i) acc[v][i] = Vec{};
  }
  for (int64_t k = 0; k < d; ++k) {
    const Vec* q = panel + k * kQueryVectors;
#pragma GCC unroll 16
    for (int i = 0; i < NumItems; ++i) {
      const float x = rows[i * d + k];
#pragma GCC unroll 16
      for (int v = 0; v < kQueryVectors; ++v) acc[v][i] += q[v] * x;
    }
  }
  // Fast path: one compare per accumulator against the thresholds, OR-ed together.
  const Vec* threshold = reinterpret_cast<const Vec*>(block.threshold + first_query);
  uint32_t any = 0;
#pragma GCC unroll 16
  for (int i = 0; i < NumItems; ++i) {
    const float b = bias[item + i];
#pragma GCC unroll 16
    for (int v = 0; v < kQueryVectors; ++v) {
      acc[v][i] += b;
      any |= LanesGreater(acc[v][i], threshold[v]);
    }
  }
  if (any != 0) OfferCandidates<NumItems>(acc, item, first_query, block);
}

// Top-k for queries [first, first + count): one thread's share of the work.
template <int D>
void TopKBlock(const float* queries, const float* items, const float* bias, const int32_t* exclude_offsets,
               const int32_t* exclude_items, int64_t first, int64_t count, int64_t n, int64_t d_runtime,
               int64_t k, float* out_scores, int32_t* out_indices) {
  const int64_t d = D > 0 ? D : d_runtime;
  const int64_t padded = (count + kMicroQueries - 1) / kMicroQueries * kMicroQueries;

  // Query panels, [micro-tile][d][kMicroQueries], zero in the padding lanes.
  std::vector<Vec> panel(static_cast<size_t>(padded / kMicroQueries * d * kQueryVectors));
  float* panel_floats = reinterpret_cast<float*>(panel.data());
  for (int64_t q = 0; q < count; ++q) {
    float* lane = panel_floats + (q / kMicroQueries) * d * kMicroQueries + q % kMicroQueries;
    for (int64_t c = 0; c < d; ++c) lane[c * kMicroQueries] = queries[(first + q) * d + c];
  }

  BlockState block;
  std::vector<IntVec> excluded_storage;
  block.Prepare(exclude_offsets, exclude_items, first, count, padded, k, out_scores, out_indices, &excluded_storage);

  const int64_t tile_items =
      std::max<int64_t>(kItemsPerStep, kItemTileBytes / std::max<int64_t>(1, d * 4)) / kItemsPerStep *
      kItemsPerStep;
  for (int64_t tile = 0; tile < n; tile += tile_items) {
    const int64_t tile_end = std::min(n, tile + tile_items);
    for (int64_t micro = 0; micro < padded; micro += kMicroQueries) {
      const Vec* micro_panel = panel.data() + (micro / kMicroQueries) * d * kQueryVectors;
      int64_t item = tile;
      for (; item + kItemsPerStep <= tile_end; item += kItemsPerStep) {
        MicroTile<D, kItemsPerStep>(micro_panel, items, bias, d, item, micro, block);
      }
      for (; item < tile_end; ++item) MicroTile<D, 1>(micro_panel, items, bias, d, item, micro, block);
    }
  }

  // Rows with fewer than k finite scores: the remaining slots say "no item".
  for (const QueryState& state : block.queries) {
    std::fill(state.scores + state.size, state.scores + k, -kInf);
    std::fill(state.items + state.size, state.items + k, -1);
  }
}

// ---------------------------------------------------------------------------------------------
// Screened top-k (AVX512-BF16): the same result as TopKBlock, bit for bit, at a fraction of the
// arithmetic. Queries and items are rounded to bfloat16 and scored with `vdpbf16ps` (twice the
// multiply-adds of an fp32 FMA per instruction). Each approximate score s~ comes with a bound
// on its distance from the exact fp32 score s:
//
//   |s~ + b - fl(s + b)| <= c * (|u| |i| + |b|),   c = kScreenSlack
//
// (rounding both operands to 8 significant bits moves each product by at most 2^-7 + 2^-16 of
// |u_k i_k|; the fp32 sums of s~ and of s add at most 66 * 2^-24 each; sum_k |u_k i_k| <=
// |u| |i|; adding b rounds once more). Norms are rounded up and padded with kScreenFloor, and
// every bias slack with it too, so the bound is strict and also covers flushed denormals.
//
// Per query the sweep keeps the k best lower bounds s~ + b - e of items not excluded; an item
// whose upper bound s~ + b + e beats the k-th best lower bound so far is a candidate. An item
// that never is one has s below the k-th best exact score, so it cannot be in the top k, not
// even on a tie. Items are swept in decreasing order of norm (bucketed), so the bounds rise
// fast, and a micro-tile stops once |u| |i| (1 + 2c) + max b, over the items left, cannot beat
// any of its queries' bounds. The candidates that still beat the final k-th lower bound (about
// k of them) are scored again with TopKBlock's arithmetic (one FMA chain over the features,
// then + b) and offered to the exact selection in item order: scores, order and ties are
// TopKBlock's. Calls with non-finite or huge inputs (norms of 1e18 or more, a bias that is NaN,
// +inf or beyond 1e30) take the fp32 path; graphrec_set_top_k_screening(0) turns the screen off.
// ---------------------------------------------------------------------------------------------

std::atomic<int> g_top_k_screening{1};

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define GRAPHREC_TOP_K_SCREENING 1

constexpr float kScreenSlack = 0.0080f;     // c above; the rigorous bound is 0.00784
constexpr float kScreenReach = 1.02f;       // |s~ + e| <= kScreenReach * |u| |i| (1.016 needed)
constexpr float kScreenFloor = 0x1p-100f;   // added to every norm and every bias slack
constexpr float kScreenMaxNorm = 1e18f;     // above it, s~ could overflow where s does not
constexpr int kScreenBuckets = 1024;        // norm buckets of the sweep order

typedef __m512bh PairVec;

// Norm of a row, rounded up past the fp32 sum's error, + floor; +inf when not finite.
inline float ScreenNorm(const float* row, int64_t d) {
  __m512 sum = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + kLanes <= d; c += kLanes) {
    const __m512 x = _mm512_loadu_ps(row + c);
    sum = _mm512_fmadd_ps(x, x, sum);
  }
  float total = _mm512_reduce_add_ps(sum);
  for (; c < d; ++c) total += row[c] * row[c];
  if (!(total < kInf)) return kInf;  // NaN or overflow
  return std::sqrt(total) * (1.0f + 1e-6f * static_cast<float>(d + 4)) + kScreenFloor;
}

// Features [2p, 2p + 32) of a row as 16 bfloat16 pairs (low half first), zero past the end;
// round to nearest even, denormals to zero (covered by the floor).
inline __m512i Bfloat16Pairs(const float* row, int64_t p, int64_t d) {
  const int64_t c = 2 * p;
  const int64_t left = std::max<int64_t>(0, std::min<int64_t>(32, d - c));
  const __mmask16 low = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1);
  const __mmask16 high = static_cast<__mmask16>(left >= 32 ? 0xFFFF : left > 16 ? (1u << (left - 16)) - 1 : 0);
  const __m512 a = _mm512_maskz_loadu_ps(low, row + c), b = _mm512_maskz_loadu_ps(high, row + c + 16);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a));  // a's values in the low half
}

// The items in the form the screen reads, built once per call, in sweep order.
struct ScreenItems {
  std::vector<Vec> storage;       // pairs: [n][num_pairs] bfloat16 pairs, 64-byte rows padded
  uint32_t* pairs = nullptr;
  int64_t num_pairs = 0, row_pairs = 0;
  std::vector<int32_t> order;     // [n] sweep position -> item
  std::vector<float> norm;        // [n] |i| in sweep order, rounded up, + floor
  std::vector<float> reach;       // [n] max norm from this position on
  std::vector<float> bias_slack;  // [n] c * |b| + floor
  std::vector<float> bias_upper;  // [n] b + bias_slack (-inf stays -inf)
  float max_bias_upper = -kInf;

  // False when some input needs the fp32 path.
  bool Build(const float* items, const float* bias, int64_t n, int64_t d) {
    num_pairs = (d + 1) / 2;
    row_pairs = (num_pairs + kLanes - 1) / kLanes * kLanes;
    std::vector<float> item_norm(n);
    float largest = 0.0f;
    int usable = 1;
#pragma omp parallel for schedule(static) num_threads(NumThreads()) reduction(&& : usable) reduction(max : largest)
    for (int64_t j = 0; j < n; ++j) {
      item_norm[j] = ScreenNorm(items + j * d, d);
      const float b = bias[j];
      if (!(item_norm[j] < kScreenMaxNorm) || !(std::fabs(b) < 1e30f || b == -kInf)) usable = 0;
      largest = std::max(largest, item_norm[j]);
    }
    if (!usable) return false;
    // A counting sort by norm bucket, largest first, item order within a bucket.
    std::vector<int64_t> start(kScreenBuckets + 1, 0);
    auto bucket = [&](float value) {
      const int64_t index = static_cast<int64_t>(value / largest * (kScreenBuckets - 1));
      return kScreenBuckets - 1 - std::clamp<int64_t>(index, 0, kScreenBuckets - 1);
    };
    for (int64_t j = 0; j < n; ++j) ++start[bucket(item_norm[j]) + 1];
    for (int b = 0; b < kScreenBuckets; ++b) start[b + 1] += start[b];
    order.resize(n);
    for (int64_t j = 0; j < n; ++j) order[start[bucket(item_norm[j])]++] = static_cast<int32_t>(j);
    storage.assign(static_cast<size_t>(n * row_pairs / kLanes), Vec{});
    pairs = reinterpret_cast<uint32_t*>(storage.data());
    norm.resize(n);
    bias_slack.resize(n);
    bias_upper.resize(n);
#pragma omp parallel for schedule(static) num_threads(NumThreads())
    for (int64_t position = 0; position < n; ++position) {
      const int64_t j = order[position];
      for (int64_t p = 0; p < num_pairs; p += kLanes) {
        _mm512_store_si512(pairs + position * row_pairs + p, Bfloat16Pairs(items + j * d, p, d));
      }
      norm[position] = item_norm[j];
      const float b = bias[j];
      bias_slack[position] = b == -kInf ? 0.0f : kScreenSlack * std::fabs(b) + kScreenFloor;
      bias_upper[position] = b == -kInf ? -kInf : b + bias_slack[position];
    }
    reach.resize(n);
    float running = 0.0f;
    for (int64_t position = n - 1; position >= 0; --position) {
      running = std::max(running, norm[position]);
      reach[position] = running;
      max_bias_upper = std::max(max_bias_upper, bias_upper[position]);
    }
    return true;
  }
};

// One query's screen: the k best lower bounds so far (descending) and its candidates (items,
// with their upper bounds).
struct ScreenState {
  std::vector<float> lower;
  std::vector<std::pair<int32_t, float>> candidates;
};

struct ScreenBlock {
  BlockState* exact;                      // exclusions, outputs, and the exact selection at the end
  std::vector<ScreenState> queries;
  std::vector<Vec> query_slack_vectors;   // [padded / kLanes], read a vector at a time
  float* query_slack;                     // the same as floats: c * |u| per query, 0 in padding
  std::vector<Vec> query_reach_vectors;   // kScreenReach * |u| per query, 0 in padding
  float* threshold;                       // the k-th best lower bound per lane (exact->threshold)
  const ScreenItems* items;
  int64_t k;
  int64_t offers = 0;

  void Offer(int64_t q, float upper, int64_t position) {
    ++offers;
    const int32_t item = items->order[position];
    const QueryState& query = exact->queries[q];
    if (IsExcluded(query.excluded_begin, query.excluded_end, item)) return;
    ScreenState& state = queries[q];
    state.candidates.emplace_back(item, upper);
    const float slack = query_slack[q] * items->norm[position] + items->bias_slack[position];
    const float lower = upper - 2.0f * slack;
    std::vector<float>& best = state.lower;
    if (static_cast<int64_t>(best.size()) == k && !(lower > best[k - 1])) return;
    if (static_cast<int64_t>(best.size()) < k) best.push_back(lower);
    int64_t slot = static_cast<int64_t>(best.size()) - 1;
    for (; slot > 0 && best[slot - 1] < lower; --slot) best[slot] = best[slot - 1];
    best[slot] = lower;
    if (static_cast<int64_t>(best.size()) == k) threshold[q] = best[k - 1];
  }
};

// True when no item from sweep position `position` on can be a candidate of the micro-tile.
inline bool ScreenExhausted(const ScreenBlock& block, int64_t position, int64_t first_query) {
  const __m512 reach = _mm512_set1_ps(block.items->reach[position]);
  const __m512 bias = _mm512_set1_ps(block.items->max_bias_upper);
  uint32_t open = 0;
  for (int v = 0; v < kQueryVectors; ++v) {
    const __m512 query_reach = reinterpret_cast<__m512>(block.query_reach_vectors[first_query / kLanes + v]);
    const __m512 best = _mm512_fmadd_ps(query_reach, reach, bias);
    open |= _mm512_cmp_ps_mask(best, _mm512_loadu_ps(block.threshold + first_query + v * kLanes), _CMP_GT_OQ);
  }
  return open == 0;
}

// Upper bounds of kMicroQueries queries (their bfloat16 panel, [pairs][kQueryVectors]) against
// NumItems consecutive sweep positions; candidates go to the slow path.
template <int P, int NumItems>
inline void ScreenTile(const PairVec* panel, const Vec* query_slack, const ScreenItems& items,
                       int64_t pairs_runtime, int64_t position, int64_t first_query, ScreenBlock& block) {
  const int64_t pairs = P > 0 ? P : pairs_runtime;
  const uint32_t* rows = items.pairs + position * items.row_pairs;
  // Plain __m512 accumulators: with the may_alias Vec type GCC stores every update to memory.
  __m512 acc[kQueryVectors][NumItems];
#pragma GCC unroll 16
  for (int v = 0; v < kQueryVectors; ++v) {
#pragma GCC unroll 16
    for (int i = 0; i < NumItems; ++i) acc[v][i] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p) {
    const PairVec* q = panel + p * kQueryVectors;
#pragma GCC unroll 16
    for (int i = 0; i < NumItems; ++i) {
      const uint32_t pair = rows[i * items.row_pairs + p];
      const PairVec x = reinterpret_cast<PairVec>(_mm512_set1_epi32(static_cast<int>(pair)));
#pragma GCC unroll 16
      for (int v = 0; v < kQueryVectors; ++v) acc[v][i] = _mm512_dpbf16_ps(acc[v][i], q[v], x);
    }
  }
  const __m512* threshold = reinterpret_cast<const __m512*>(block.threshold + first_query);
  uint32_t any = 0;
#pragma GCC unroll 16
  for (int i = 0; i < NumItems; ++i) {
    const __m512 b = _mm512_set1_ps(items.bias_upper[position + i]);
    const __m512 norm = _mm512_set1_ps(items.norm[position + i]);
#pragma GCC unroll 16
    for (int v = 0; v < kQueryVectors; ++v) {
      acc[v][i] = _mm512_fmadd_ps(reinterpret_cast<__m512>(query_slack[v]), norm, _mm512_add_ps(acc[v][i], b));
      any |= _mm512_cmp_ps_mask(acc[v][i], threshold[v], _CMP_GT_OQ);
    }
  }
  if (any != 0) {
    Vec upper[kQueryVectors][NumItems];
    std::memcpy(upper, acc, sizeof(upper));
    OfferCandidates<NumItems>(upper, position, first_query, block);
  }
}

// TopKBlock's arithmetic for a few (query, item) pairs: one FMA chain over the features, + b.
template <int D>
void ExactScores(const float* query, const float* items, const float* bias, int64_t d_runtime,
                 const int32_t* candidates, int64_t count, float* scores) {
  const int64_t d = D > 0 ? D : d_runtime;
  constexpr int kChains = 8;  // independent chains in flight hide the FMA latency
  for (int64_t first = 0; first < count; first += kChains) {
    const int64_t chains = std::min<int64_t>(kChains, count - first);
    const float* rows[kChains];
    float acc[kChains] = {};
    for (int64_t c = 0; c < chains; ++c) rows[c] = items + static_cast<int64_t>(candidates[first + c]) * d;
    for (int64_t c = chains; c < kChains; ++c) rows[c] = rows[0];
    for (int64_t f = 0; f < d; ++f) {
#pragma GCC unroll 8
      for (int c = 0; c < kChains; ++c) acc[c] = std::fma(query[f], rows[c][f], acc[c]);
    }
    for (int64_t c = 0; c < chains; ++c) scores[first + c] = acc[c] + bias[candidates[first + c]];
  }
}

// TopKBlock's result through the bfloat16 screen; false when the block's queries need the fp32
// path (a query that is zero, not finite or huge; near-ties in bulk): then nothing is written.
template <int D>
bool TopKBlockScreened(const float* queries, const float* items, const float* bias, const ScreenItems& screen,
                       const int32_t* exclude_offsets, const int32_t* exclude_items, int64_t first,
                       int64_t count, int64_t n, int64_t d_runtime, int64_t k, float* out_scores,
                       int32_t* out_indices) {
  const int64_t d = D > 0 ? D : d_runtime;
  constexpr int P = D > 0 ? (D + 1) / 2 : 0;
  const int64_t pairs = screen.num_pairs;
  const int64_t padded = (count + kMicroQueries - 1) / kMicroQueries * kMicroQueries;

  ScreenBlock block;
  block.query_slack_vectors.assign(padded / kLanes, Vec{});
  block.query_slack = reinterpret_cast<float*>(block.query_slack_vectors.data());
  block.query_reach_vectors.assign(padded / kLanes, Vec{});
  float* query_reach = reinterpret_cast<float*>(block.query_reach_vectors.data());
  for (int64_t q = 0; q < count; ++q) {
    const float norm = ScreenNorm(queries + (first + q) * d, d);
    // A zero query ties every item (its scores are the biases): the screen cannot separate
    // ties, so every item would be a candidate.
    if (!(norm < kScreenMaxNorm) || norm == kScreenFloor) return false;
    block.query_slack[q] = kScreenSlack * norm;
    query_reach[q] = kScreenReach * norm;
  }
  // bfloat16 panels, [micro-tile][pairs][kQueryVectors] vectors of kLanes pairs.
  std::vector<Vec> panel(static_cast<size_t>(padded / kMicroQueries * pairs * kQueryVectors));
  uint32_t* panel_pairs = reinterpret_cast<uint32_t*>(panel.data());
  for (int64_t q = 0; q < count; ++q) {
    uint32_t* lane = panel_pairs + (q / kMicroQueries) * pairs * kMicroQueries + q % kMicroQueries;
    alignas(64) uint32_t row[kLanes];
    for (int64_t p = 0; p < pairs; p += kLanes) {
      _mm512_store_si512(row, Bfloat16Pairs(queries + (first + q) * d, p, d));
      for (int64_t l = 0; l < kLanes && p + l < pairs; ++l) lane[(p + l) * kMicroQueries] = row[l];
    }
  }

  BlockState exact;
  std::vector<IntVec> excluded_storage;
  exact.Prepare(exclude_offsets, exclude_items, first, count, padded, k, out_scores, out_indices, &excluded_storage);
  block.exact = &exact;
  block.threshold = exact.threshold;  // lower bounds during the sweep
  block.items = &screen;
  block.k = k;
  block.queries.resize(count);
  for (ScreenState& state : block.queries) {
    state.lower.reserve(k);
    state.candidates.reserve(2 * k + 32);
  }

  const int64_t tile_items =
      std::max<int64_t>(kItemsPerStep, kItemTileBytes / std::max<int64_t>(1, screen.row_pairs * 4)) /
      kItemsPerStep * kItemsPerStep;
  std::vector<char> exhausted(padded / kMicroQueries, 0);
  // An offer costs about as much as screening a hundred items: past this many (near-ties in
  // bulk), the fp32 path is cheaper, and the block starts again there.
  const int64_t offer_budget = count * (n / 128 + 8 * k + 64);
  for (int64_t tile = 0; tile < n; tile += tile_items) {
    const int64_t tile_end = std::min(n, tile + tile_items);
    for (int64_t micro = 0; micro < padded; micro += kMicroQueries) {
      if (block.offers > offer_budget) return false;
      char& done = exhausted[micro / kMicroQueries];
      if (done) continue;
      const PairVec* micro_panel =
          reinterpret_cast<const PairVec*>(panel.data() + (micro / kMicroQueries) * pairs * kQueryVectors);
      const Vec* slack = block.query_slack_vectors.data() + micro / kLanes;
      int64_t position = tile;
      for (; position + kItemsPerStep <= tile_end; position += kItemsPerStep) {
        if (ScreenExhausted(block, position, micro)) {
          done = 1;
          break;
        }
        ScreenTile<P, kItemsPerStep>(micro_panel, slack, screen, pairs, position, micro, block);
      }
      if (done) continue;
      for (; position < tile_end; ++position) {
        ScreenTile<P, 1>(micro_panel, slack, screen, pairs, position, micro, block);
      }
    }
  }

  // The exact selection over the surviving candidates, in item order.
  std::fill(exact.threshold, exact.threshold + count, -kInf);
  std::vector<int32_t> survivors;
  std::vector<float> scores;
  for (int64_t q = 0; q < count; ++q) {
    const ScreenState& state = block.queries[q];
    const float bound = static_cast<int64_t>(state.lower.size()) == k ? state.lower[k - 1] : -kInf;
    survivors.clear();
    for (const auto& [item, upper] : state.candidates) {
      if (upper > bound) survivors.push_back(item);
    }
    std::sort(survivors.begin(), survivors.end());
    scores.resize(survivors.size());
    ExactScores<D>(queries + (first + q) * d, items, bias, d, survivors.data(),
                   static_cast<int64_t>(survivors.size()), scores.data());
    for (size_t c = 0; c < survivors.size(); ++c) {
      // TopKBlock never offers -inf (its thresholds start there); Offer checks the rest.
      if (scores[c] > -kInf) exact.Offer(q, scores[c], survivors[c]);
    }
  }
  for (const QueryState& state : exact.queries) {
    std::fill(state.scores + state.size, state.scores + k, -kInf);
    std::fill(state.items + state.size, state.items + k, -1);
  }
  return true;
}
#endif  // AVX512-BF16


ffi::Error TopKScoresImpl(ffi::BufferR2<ffi::F32> queries, ffi::BufferR2<ffi::F32> items,
                          ffi::BufferR1<ffi::F32> item_bias, ffi::BufferR1<ffi::S32> exclude_offsets,
                          ffi::BufferR1<ffi::S32> exclude_items, int64_t k,
                          ffi::ResultBufferR2<ffi::F32> scores, ffi::ResultBufferR2<ffi::S32> indices) {
  const int64_t b = queries.dimensions()[0], d = queries.dimensions()[1];
  const int64_t n = items.dimensions()[0];
  if (k < 1) return ffi::Error::InvalidArgument("top_k_scores: k must be at least 1");
  if (auto error = CheckOffsets(exclude_offsets.typed_data(), b, exclude_items.element_count(),
                                "top_k_scores", "exclude_offsets");
      error.failure()) {
    return error;
  }
  // Blocks small enough that every thread gets work, large enough to reuse each item tile.
  const int64_t num_threads = NumThreads();
  const int64_t per_thread = (b + num_threads - 1) / num_threads;
  const int64_t block_queries = std::clamp<int64_t>(
      (per_thread + kMicroQueries - 1) / kMicroQueries * kMicroQueries, kMicroQueries, kMaxBlockQueries);
  const int64_t num_blocks = (b + block_queries - 1) / block_queries;
#if defined(GRAPHREC_TOP_K_SCREENING)
  // The screen pays for building its item table once the call scores enough queries.
  ScreenItems screen;
  const bool screened = g_top_k_screening.load(std::memory_order_relaxed) != 0 && b >= kMicroQueries &&
                        screen.Build(items.typed_data(), item_bias.typed_data(), n, d);
#endif
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t block = 0; block < num_blocks; ++block) {
    const int64_t first = block * block_queries, count = std::min(block_queries, b - first);
    auto run = [&](auto width) {
      constexpr int D = decltype(width)::value;
#if defined(GRAPHREC_TOP_K_SCREENING)
      if (screened && TopKBlockScreened<D>(queries.typed_data(), items.typed_data(), item_bias.typed_data(),
                                           screen, exclude_offsets.typed_data(), exclude_items.typed_data(),
                                           first, count, n, d, k, scores->typed_data(), indices->typed_data())) {
        return;
      }
#endif
      TopKBlock<D>(queries.typed_data(), items.typed_data(), item_bias.typed_data(), exclude_offsets.typed_data(),
                   exclude_items.typed_data(), first, count, n, d, k, scores->typed_data(), indices->typed_data());
    };
    if (d == 64) {
      run(std::integral_constant<int, 64>{});
    } else {
      run(std::integral_constant<int, 0>{});
    }
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Host-side uniform neighbourhood sampling (graph/subgraphs.py's NeighborSampler, method
// "uniform"), called through ctypes with the GIL released. It builds the same symmetric
// subgraph as the numpy path, in the same order (levels of sorted distinct nodes, edges
// grouped by receiver, stable counting sorts), from its own seeded stream: with every
// neighbour taken (fanout >= degree) the two paths give identical arrays.
// ---------------------------------------------------------------------------------------------

struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

// Sorted distinct values of a list and each value's position among them, in O(n + distinct)
// (a scan of the node range instead of a sort when the distinct values are dense).
class Distinct {
 public:
  explicit Distinct(int64_t num_nodes) : mark_(num_nodes, 0), index_(num_nodes, 0) {}

  void operator()(const std::vector<int32_t>& values, std::vector<int32_t>* distinct,
                  std::vector<int32_t>* local) {
    distinct->clear();
    for (const int32_t v : values) {
      if (!mark_[v]) {
        mark_[v] = 1;
        distinct->push_back(v);
      }
    }
    const int64_t n = static_cast<int64_t>(mark_.size());
    if (static_cast<int64_t>(distinct->size()) * 32 > n) {
      distinct->clear();
      for (int64_t v = 0; v < n; ++v) {
        if (mark_[v]) distinct->push_back(static_cast<int32_t>(v));
      }
    } else {
      std::sort(distinct->begin(), distinct->end());
    }
    for (size_t i = 0; i < distinct->size(); ++i) {
      mark_[(*distinct)[i]] = 0;
      index_[(*distinct)[i]] = static_cast<int32_t>(i);
    }
    local->resize(values.size());
    for (size_t j = 0; j < values.size(); ++j) (*local)[j] = index_[values[j]];
  }

 private:
  std::vector<uint8_t> mark_;
  std::vector<int32_t> index_;
};

struct HopEdges {
  std::vector<int32_t> counts;   // [receivers] sampled in-edges per receiver
  std::vector<int32_t> senders;  // [e] full-graph node of each sampled edge, grouped by receiver
  std::vector<float> weights;    // [e] the edge's weight times degree / count
  std::vector<int8_t> kinds;     // [e]
};

// Up to `fanout` distinct in-edges of each receiver, uniformly (Floyd's algorithm).
void SampleHop(const int64_t* offsets, const int32_t* neighbors, const float* weights, const int8_t* kinds,
               const std::vector<int32_t>& receivers, int64_t fanout, SplitMix64* rng, HopEdges* out) {
  out->counts.assign(receivers.size(), 0);
  out->senders.clear();
  out->weights.clear();
  out->kinds.clear();
  std::vector<int64_t> picks(fanout);
  for (size_t i = 0; i < receivers.size(); ++i) {
    const int64_t begin = offsets[receivers[i]], degree = offsets[receivers[i] + 1] - begin;
    const int64_t count = std::min(degree, fanout);
    out->counts[i] = static_cast<int32_t>(count);
    const float scale = count > 0 ? static_cast<float>(static_cast<double>(degree) / static_cast<double>(count)) : 0.0f;
    for (int64_t j = 0; j < count; ++j) {
      int64_t pick = j;
      if (degree > fanout) {
        const int64_t limit = degree - fanout + j;  // draw from [0, limit]; on a repeat take `limit`
        pick = std::min(static_cast<int64_t>(rng->Uniform() * static_cast<double>(limit + 1)), limit);
        for (int64_t earlier = 0; earlier < j; ++earlier) {
          if (picks[earlier] == pick) {
            pick = limit;
            break;
          }
        }
        picks[j] = pick;
      }
      const int64_t entry = begin + pick;
      out->senders.push_back(neighbors[entry]);
      out->weights.push_back(weights[entry] * scale);
      out->kinds.push_back(kinds[entry]);
    }
  }
}

// Positions 0..n-1 stably ordered by key (keys in [0, num_keys)); `starts` gets the groups' starts.
std::vector<int32_t> CountingOrder(const std::vector<int32_t>& keys, int64_t num_keys, std::vector<int64_t>* starts) {
  starts->assign(num_keys + 1, 0);
  for (const int32_t key : keys) ++(*starts)[key + 1];
  for (int64_t k = 0; k < num_keys; ++k) (*starts)[k + 1] += (*starts)[k];
  std::vector<int64_t> next(starts->begin(), starts->end() - 1);
  std::vector<int32_t> order(keys.size());
  for (size_t j = 0; j < keys.size(); ++j) order[next[keys[j]]++] = static_cast<int32_t>(j);
  return order;
}

}  // namespace

// Returns 0, or -1 when a seed lies outside [0, num_nodes) (nothing written then); the operator's
// neighbours are the caller's to check, once (graph.subgraphs.NeighborSampler does).
// sizes receives {seeds' distinct count n0, subgraph nodes, subgraph edges}. The caller sizes the
// outputs by the bounds: nodes <= num_seeds * (1 + 2 f0 + f0 f1), edges <= num_seeds * (4 f0 + 2 f0 f1)
// (2 f0 with one hop).
extern "C" int graphrec_sample_uniform(const int64_t* offsets, const int32_t* neighbors, const float* weights,
                                       const int8_t* kinds, int64_t num_nodes, const int32_t* seeds,
                                       int64_t num_seeds, const int64_t* fanouts, int64_t num_hops,
                                       uint64_t seed, int32_t* global_id, int32_t* positions,
                                       int32_t* receivers, int32_t* senders, float* edge_weights,
                                       int8_t* edge_kinds, int64_t* sizes) {
  for (int64_t i = 0; i < num_seeds; ++i) {
    if (seeds[i] < 0 || seeds[i] >= num_nodes) return -1;
  }
  SplitMix64 rng{seed};
  Distinct distinct(num_nodes);
  std::vector<int32_t> seed_list(seeds, seeds + num_seeds), level0, seed_local;
  distinct(seed_list, &level0, &seed_local);
  const int64_t n0 = static_cast<int64_t>(level0.size());
  HopEdges hop1, hop2;
  SampleHop(offsets, neighbors, weights, kinds, level0, fanouts[0], &rng, &hop1);
  const int64_t e1 = static_cast<int64_t>(hop1.senders.size());
  std::vector<int32_t> receivers1(e1);
  for (int64_t r = 0, e = 0; r < n0; ++r) {
    for (int32_t c = 0; c < hop1.counts[r]; ++c) receivers1[e++] = static_cast<int32_t>(r);
  }
  std::vector<int32_t> level1, local1;
  distinct(hop1.senders, &level1, &local1);
  const int64_t n1 = static_cast<int64_t>(level1.size());
  std::vector<int64_t> parent_start;  // by_parent: first-hop edges grouped by their level-1 node
  const std::vector<int32_t> by_parent = CountingOrder(local1, n1, &parent_start);
  std::vector<int32_t> level2, local2, hop2_start(n1 + 1, 0);
  int64_t e2 = 0;
  if (num_hops == 2) {
    SampleHop(offsets, neighbors, weights, kinds, level1, fanouts[1], &rng, &hop2);
    e2 = static_cast<int64_t>(hop2.senders.size());
    for (int64_t p = 0; p < n1; ++p) hop2_start[p + 1] = hop2_start[p] + hop2.counts[p];
    // Leaves: the sampled second hop, then one cancelling copy of the parent per first-hop edge.
    std::vector<int32_t> leaf_values(hop2.senders);
    leaf_values.reserve(e2 + e1);
    for (int64_t i = 0; i < e1; ++i) leaf_values.push_back(level0[receivers1[by_parent[i]]]);
    distinct(leaf_values, &level2, &local2);
  }
  const int64_t n2 = static_cast<int64_t>(level2.size());
  int64_t edge = 0;
  auto emit = [&](int64_t receiver, int64_t sender, float weight, int8_t kind) {
    receivers[edge] = static_cast<int32_t>(receiver);
    senders[edge] = static_cast<int32_t>(sender);
    edge_weights[edge] = weight;
    edge_kinds[edge] = kind;
    ++edge;
  };
  // Seeds receive their first hop.
  for (int64_t e = 0; e < e1; ++e) emit(receivers1[e], n0 + local1[e], hop1.weights[e], hop1.kinds[e]);
  // Level-1 nodes receive the reverse first-hop edges, their second hop, and the cancelling leaves.
  const int64_t leaf_base = n0 + n1;
  for (int64_t p = 0; p < n1; ++p) {
    for (int64_t i = parent_start[p]; i < parent_start[p + 1]; ++i) {
      const int32_t e = by_parent[i];
      emit(n0 + p, receivers1[e], hop1.weights[e], hop1.kinds[e]);
    }
    if (num_hops == 2) {
      for (int64_t j = hop2_start[p]; j < hop2_start[p + 1]; ++j) {
        emit(n0 + p, leaf_base + local2[j], hop2.weights[j], hop2.kinds[j]);
      }
      for (int64_t i = parent_start[p]; i < parent_start[p + 1]; ++i) {
        const int32_t e = by_parent[i];
        emit(n0 + p, leaf_base + local2[e2 + i], -hop1.weights[e], hop1.kinds[e]);
      }
    }
  }
  // Leaves receive the reverse of both, grouped by leaf (a stable counting sort).
  if (num_hops == 2) {
    std::vector<int32_t> leaf_parent(e2 + e1);
    for (int64_t p = 0; p < n1; ++p) {
      for (int64_t j = hop2_start[p]; j < hop2_start[p + 1]; ++j) leaf_parent[j] = static_cast<int32_t>(p);
    }
    for (int64_t i = 0; i < e1; ++i) leaf_parent[e2 + i] = local1[by_parent[i]];
    std::vector<int64_t> leaf_start;
    for (const int32_t j : CountingOrder(local2, n2, &leaf_start)) {
      const bool second_hop = j < e2;
      const int32_t e = second_hop ? 0 : by_parent[j - e2];
      emit(leaf_base + local2[j], n0 + leaf_parent[j], second_hop ? hop2.weights[j] : -hop1.weights[e],
           second_hop ? hop2.kinds[j] : hop1.kinds[e]);
    }
  }
  std::copy(level0.begin(), level0.end(), global_id);
  std::copy(level1.begin(), level1.end(), global_id + n0);
  std::copy(level2.begin(), level2.end(), global_id + n0 + n1);
  std::copy(seed_local.begin(), seed_local.end(), positions);
  sizes[0] = n0;
  sizes[1] = n0 + n1 + n2;
  sizes[2] = edge;
  return 0;
}

// 1 (the default): top-k calls screen with bfloat16 scores where the CPU has AVX512-BF16;
// 0: always the fp32 path. The results are the same; this exists to compare the two.
extern "C" void graphrec_set_top_k_screening(int enabled) {
  g_top_k_screening.store(enabled, std::memory_order_relaxed);
}

// 1 when this build has the bfloat16 screen (the CPU has AVX512-BF16).
extern "C" int graphrec_top_k_screening_built() {
#if defined(GRAPHREC_TOP_K_SCREENING)
  return 1;
#else
  return 0;
#endif
}

extern "C" void graphrec_set_num_threads(int num_threads) {
  g_num_threads.store(num_threads, std::memory_order_relaxed);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(GraphrecCsrMatmul, CsrMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // offsets [n_rows + 1]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // neighbors [nnz]
                                  .Arg<ffi::BufferR1<ffi::F32>>()  // weights [nnz]
                                  .Arg<ffi::BufferR2<ffi::F32>>()  // x [n_cols, d]
                                  .Ret<ffi::BufferR2<ffi::F32>>()  // y [n_rows, d]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(GraphrecCsrMatmulRows, CsrMatmulRowsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // offsets [n_rows + 1]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // neighbors [nnz]
                                  .Arg<ffi::BufferR1<ffi::F32>>()  // weights [nnz]
                                  .Arg<ffi::BufferR2<ffi::F32>>()  // x [n_cols, d]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // rows [r]
                                  .Ret<ffi::BufferR2<ffi::F32>>()  // y [r, d]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(GraphrecCsrScatterRows, CsrScatterRowsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // offsets [n_rows + 1]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // neighbors [nnz]
                                  .Arg<ffi::BufferR1<ffi::F32>>()  // weights [nnz]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // rows [r]
                                  .Arg<ffi::BufferR2<ffi::F32>>()  // ybar [r, d]
                                  .Ret<ffi::BufferR2<ffi::F32>>()  // xbar [n_cols, d]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(GraphrecTopKScores, TopKScoresImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::BufferR2<ffi::F32>>()  // queries [b, d]
                                  .Arg<ffi::BufferR2<ffi::F32>>()  // items [n, d]
                                  .Arg<ffi::BufferR1<ffi::F32>>()  // item_bias [n]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // exclude_offsets [b + 1]
                                  .Arg<ffi::BufferR1<ffi::S32>>()  // exclude_items [m]
                                  .Attr<int64_t>("k")
                                  .Ret<ffi::BufferR2<ffi::F32>>()  // scores [b, k]
                                  .Ret<ffi::BufferR2<ffi::S32>>()  // indices [b, k]
);
