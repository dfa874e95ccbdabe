// flora native kernels: a multithreaded single-precision GEMM for the model layer.
//
// Why: TensorFlow.js on this project's CPU default (the wasm backend) runs every matmul
// single-threaded with 128-bit SIMD, and its native backend (tfjs-node) needs a libtensorflow
// download at install time. The matmuls are >80% of a LoRA training step, so this addon
// gives them what PyTorch's BLAS has: 256-bit FMA micro-kernels, cache blocking, packing,
// and all cores. It is optional: src/model/native.ts loads it when it was built, and the
// wasm kernels run otherwise.
//
// Layout: row-major. For each batch item b:
//   C[b] (m x n)  = op(A[b]) (m x k) * op(B[b]) (k x n)      (or += with accumulate)
// op(A) = A^T when transA (A stored k x m), likewise for B. A batch stride of 0 broadcasts.
//
// Determinism: every element of C is computed by one thread with a fixed summation order
// (k in blocks of KC, in order; within a block one FMA chain), whatever the thread count
// and however the work is split. Same machine + same ISA path => same bits.
//
// The structure is the classic Goto/BLIS one: pack a KC x NC panel of op(B) into NR-wide
// slivers, pack an MC x KC block of op(A) into MR-tall slivers, run an MR x NR register
// micro-kernel over them.

#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// The AVX2 path needs GCC/Clang (target attributes, __builtin_cpu_supports); other
// compilers and CPUs build the portable kernel only.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FLORA_X86 1
#endif
#ifdef FLORA_FORCE_PORTABLE  // builds the non-x86 configuration on x86 (to check it compiles)
#undef FLORA_X86
#endif

namespace {

constexpr int MR = 6;
constexpr int NR = 16;
#ifndef FLORA_KC
#define FLORA_KC 512
#endif
#ifndef FLORA_MC
#define FLORA_MC 48
#endif
constexpr int KC = FLORA_KC;
constexpr int MC = FLORA_MC;  // multiple of MR
constexpr int NC = 2048;      // multiple of NR

// Storage of a B operand: float32, or half precision widened to float32 as it is packed
// (frozen base weights kept as the checkpoint stores them; see "frozen weights" below).
enum Dtype : int { F32 = 0, BF16 = 1, F16 = 2 };

struct Operand {
  const float* p;
  int64_t rs;  // stride between rows of op(X)
  int64_t cs;  // stride between columns of op(X)
  const uint16_t* h = nullptr;  // half-precision elements (instead of p), B operands only
  int dtype = F32;
};

inline float bf16_to_f32(uint16_t v) {
  const uint32_t u = (uint32_t)v << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaNs included).
inline float f16_to_f32(uint16_t v) {
  const uint32_t sign = (uint32_t)(v & 0x8000) << 16;
  uint32_t exp = (v >> 10) & 0x1f;
  uint32_t man = v & 0x3ff;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((man & 0x400) == 0) {
      man <<= 1;
      exp--;
    }
    u = sign | (exp << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float half_to_f32(uint16_t v, int dtype) { return dtype == BF16 ? bf16_to_f32(v) : f16_to_f32(v); }

// ---------------------------------------------------------------------------------------
// packing
// ---------------------------------------------------------------------------------------

// op(A)[i0 .. i0+mc) x [p0 .. p0+kc) into slivers of MR rows: sliver s holds, for each p,
// MR consecutive values (rows s*MR .. s*MR+MR-1), zero-padded past mc.
void pack_a(const Operand& a, int i0, int mc, int p0, int kc, float* dst) {
  for (int s = 0; s < mc; s += MR) {
    const int rows = std::min(MR, mc - s);
    for (int p = 0; p < kc; p++) {
      const float* src = a.p + (int64_t)(i0 + s) * a.rs + (int64_t)(p0 + p) * a.cs;
      int r = 0;
      for (; r < rows; r++) dst[r] = src[r * a.rs];
      for (; r < MR; r++) dst[r] = 0.f;
      dst += MR;
    }
  }
}

// op(B)[p0 .. p0+kc) x [j0 .. j0+nc) into slivers of NR columns, zero-padded past nc.
// The half-precision case of pack_b, for one storage type (so the widening inlines, and
// vectorises where the columns are contiguous).
template <int DT>
void pack_b_half(const Operand& b, int p0, int kc, int j0, int nc, float* dst) {
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    for (int p = 0; p < kc; p++) {
      const uint16_t* src = b.h + (int64_t)(p0 + p) * b.rs + (int64_t)(j0 + s) * b.cs;
      int c = 0;
      if (b.cs == 1) {
        for (; c < cols; c++) dst[c] = DT == BF16 ? bf16_to_f32(src[c]) : f16_to_f32(src[c]);
      } else {
        for (; c < cols; c++) dst[c] = DT == BF16 ? bf16_to_f32(src[c * b.cs]) : f16_to_f32(src[c * b.cs]);
      }
      for (; c < NR; c++) dst[c] = 0.f;
      dst += NR;
    }
  }
}

void pack_b(const Operand& b, int p0, int kc, int j0, int nc, float* dst) {
  if (b.dtype == BF16) return pack_b_half<BF16>(b, p0, kc, j0, nc, dst);
  if (b.dtype == F16) return pack_b_half<F16>(b, p0, kc, j0, nc, dst);
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    for (int p = 0; p < kc; p++) {
      const float* src = b.p + (int64_t)(p0 + p) * b.rs + (int64_t)(j0 + s) * b.cs;
      int c = 0;
      if (b.cs == 1 && cols == NR) {
        std::memcpy(dst, src, NR * sizeof(float));
      } else {
        for (; c < cols; c++) dst[c] = src[c * b.cs];
        for (; c < NR; c++) dst[c] = 0.f;
      }
      dst += NR;
    }
  }
}

// ---------------------------------------------------------------------------------------
// micro-kernels: acc[MR][NR] = sum_p A[p][r] * B[p][c]; then C = acc (+ C when add)
// ---------------------------------------------------------------------------------------

using MicroKernel = void (*)(int kc, const float* a, const float* b, float* c, int64_t ldc, bool add,
                             int rows, int cols);

void store_tile(const float* acc, float* c, int64_t ldc, bool add, int rows, int cols) {
  for (int r = 0; r < rows; r++) {
    float* cr = c + r * ldc;
    const float* ar = acc + r * NR;
    if (add) {
      for (int j = 0; j < cols; j++) cr[j] += ar[j];
    } else {
      for (int j = 0; j < cols; j++) cr[j] = ar[j];
    }
  }
}

void micro_generic(int kc, const float* a, const float* b, float* c, int64_t ldc, bool add, int rows,
                   int cols) {
  float acc[MR * NR] = {0};
  for (int p = 0; p < kc; p++) {
    for (int r = 0; r < MR; r++) {
      const float av = a[r];
      for (int j = 0; j < NR; j++) acc[r * NR + j] += av * b[j];
    }
    a += MR;
    b += NR;
  }
  store_tile(acc, c, ldc, add, rows, cols);
}

#ifdef FLORA_X86
__attribute__((target("avx2,fma"))) void micro_avx2(int kc, const float* a, const float* b, float* c,
                                                      int64_t ldc, bool add, int rows, int cols) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
    __m256 av;
    av = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
    a += MR;
    b += NR;
  }
  if (rows == MR && cols == NR) {
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < MR; r++) {
      float* cr = c + r * ldc;
      if (add) {
        _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc[r][0]));
        _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc[r][1]));
      } else {
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
      }
    }
    return;
  }
  alignas(32) float tile[MR * NR];
  __m256* t = reinterpret_cast<__m256*>(tile);
  t[0] = c00, t[1] = c01, t[2] = c10, t[3] = c11, t[4] = c20, t[5] = c21;
  t[6] = c30, t[7] = c31, t[8] = c40, t[9] = c41, t[10] = c50, t[11] = c51;
  store_tile(tile, c, ldc, add, rows, cols);
}

// AVX-512: one zmm holds a row of the NR = 16 tile, so the same 6 x 16 tile takes 6 FMAs
// per k instead of 12, on the same packed operands. Each element is the same FMA chain over
// k in the same order as the AVX2 kernel's, so both give the same bits.
__attribute__((target("avx512f"))) void micro_avx512(int kc, const float* a, const float* b, float* c,
                                                      int64_t ldc, bool add, int rows, int cols) {
  __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps();
  __m512 c3 = _mm512_setzero_ps(), c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps();
  for (int p = 0; p < kc; p++) {
    const __m512 bv = _mm512_loadu_ps(b);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), bv, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1]), bv, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2]), bv, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3]), bv, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4]), bv, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5]), bv, c5);
    a += MR;
    b += NR;
  }
  const __m512 acc[MR] = {c0, c1, c2, c3, c4, c5};
  if (rows == MR && cols == NR) {
    for (int r = 0; r < MR; r++) {
      float* cr = c + r * ldc;
      _mm512_storeu_ps(cr, add ? _mm512_add_ps(_mm512_loadu_ps(cr), acc[r]) : acc[r]);
    }
    return;
  }
  alignas(64) float tile[MR * NR];
  for (int r = 0; r < MR; r++) _mm512_store_ps(tile + r * NR, acc[r]);
  store_tile(tile, c, ldc, add, rows, cols);
}

// Two adjacent 6-row slivers of packed A (12 rows) against one 16-column sliver of B: 12
// independent accumulator chains, enough to keep two 512-bit FMA pipes busy through the
// FMA latency (6 chains cannot). Every element is still one FMA chain over k in order: the
// same bits as micro_avx512 and micro_avx2. Full 12 rows only; cols may be partial.
__attribute__((target("avx512f"))) void micro_avx512_x2(int kc, const float* a0, const float* a1, const float* b,
                                                         float* c, int64_t ldc, bool add, int cols) {
  __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps();
  __m512 c3 = _mm512_setzero_ps(), c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps();
  __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps(), d2 = _mm512_setzero_ps();
  __m512 d3 = _mm512_setzero_ps(), d4 = _mm512_setzero_ps(), d5 = _mm512_setzero_ps();
  for (int p = 0; p < kc; p++) {
    const __m512 bv = _mm512_loadu_ps(b);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[0]), bv, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(a0[1]), bv, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(a0[2]), bv, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(a0[3]), bv, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(a0[4]), bv, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(a0[5]), bv, c5);
    d0 = _mm512_fmadd_ps(_mm512_set1_ps(a1[0]), bv, d0);
    d1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[1]), bv, d1);
    d2 = _mm512_fmadd_ps(_mm512_set1_ps(a1[2]), bv, d2);
    d3 = _mm512_fmadd_ps(_mm512_set1_ps(a1[3]), bv, d3);
    d4 = _mm512_fmadd_ps(_mm512_set1_ps(a1[4]), bv, d4);
    d5 = _mm512_fmadd_ps(_mm512_set1_ps(a1[5]), bv, d5);
    a0 += MR;
    a1 += MR;
    b += NR;
  }
  const __m512 acc[2 * MR] = {c0, c1, c2, c3, c4, c5, d0, d1, d2, d3, d4, d5};
  if (cols == NR) {
    for (int r = 0; r < 2 * MR; r++) {
      float* cr = c + r * ldc;
      _mm512_storeu_ps(cr, add ? _mm512_add_ps(_mm512_loadu_ps(cr), acc[r]) : acc[r]);
    }
    return;
  }
  alignas(64) float tile[2 * MR * NR];
  for (int r = 0; r < 2 * MR; r++) _mm512_store_ps(tile + r * NR, acc[r]);
  store_tile(tile, c, ldc, add, MR, cols);
  store_tile(tile + MR * NR, c + MR * ldc, ldc, add, MR, cols);
}

// Twelve rows (two packed A slivers) against 32 columns (two adjacent packed B slivers):
// 24 accumulator chains, and per k 14 loads for 24 FMAs where the 16-column kernel needs 13
// for 12, so the FMA pipes, not the loads, set the pace. Each element is still one FMA
// chain over k in order: the same bits as the kernels above. Full 12 rows; 16 < cols <= 32.
__attribute__((target("avx512f"))) void micro_avx512_12x32(int kc, const float* a0, const float* a1, const float* b0,
                                                            const float* b1, float* c, int64_t ldc, bool add, int cols) {
  __m512 lo[2 * MR], hi[2 * MR];
#pragma GCC unroll 12
  for (int r = 0; r < 2 * MR; r++) lo[r] = hi[r] = _mm512_setzero_ps();
  for (int p = 0; p < kc; p++) {
    const __m512 bl = _mm512_loadu_ps(b0), bh = _mm512_loadu_ps(b1);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m512 x = _mm512_set1_ps(a0[r]);
      lo[r] = _mm512_fmadd_ps(x, bl, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, bh, hi[r]);
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m512 x = _mm512_set1_ps(a1[r]);
      lo[MR + r] = _mm512_fmadd_ps(x, bl, lo[MR + r]);
      hi[MR + r] = _mm512_fmadd_ps(x, bh, hi[MR + r]);
    }
    a0 += MR;
    a1 += MR;
    b0 += NR;
    b1 += NR;
  }
  if (cols == 2 * NR) {
#pragma GCC unroll 12
    for (int r = 0; r < 2 * MR; r++) {
      float* cr = c + r * ldc;
      _mm512_storeu_ps(cr, add ? _mm512_add_ps(_mm512_loadu_ps(cr), lo[r]) : lo[r]);
      _mm512_storeu_ps(cr + NR, add ? _mm512_add_ps(_mm512_loadu_ps(cr + NR), hi[r]) : hi[r]);
    }
    return;
  }
  alignas(64) float tile[2 * MR * NR];
  for (int r = 0; r < 2 * MR; r++) _mm512_store_ps(tile + r * NR, lo[r]);
  store_tile(tile, c, ldc, add, MR, NR);
  store_tile(tile + MR * NR, c + MR * ldc, ldc, add, MR, NR);
  for (int r = 0; r < 2 * MR; r++) _mm512_store_ps(tile + r * NR, hi[r]);
  store_tile(tile, c + NR, ldc, add, MR, cols - NR);
  store_tile(tile + MR * NR, c + MR * ldc + NR, ldc, add, MR, cols - NR);
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

MicroKernel g_kernel = micro_generic;
const char* g_isa = "generic";

// ---------------------------------------------------------------------------------------
// one thread's share: C rows [i0, i1) x columns [j0, j1) of one batch item
// ---------------------------------------------------------------------------------------

struct Scratch {
  std::vector<float> a, b;
  std::vector<float> thin_a;  // all the rows of a thin A block (THIN_M rounded up to MR, x KC), allocated on first use
  Scratch() : a((size_t)MC * KC), b((size_t)KC * NC) {}
};

// Products with at most this many rows (a training step's batch x sequence, typically)
// take the thin path of gemm_block.
constexpr int THIN_M = 256;

// Runs the micro-kernels of one packed B sliver (kc x NR, columns jc .. jc+cols) against
// the packed A rows [0, mc) (slivers of MR rows, kc each), writing C rows ic .. ic+mc.
// Packed B slivers (each kc x NR) for columns jc .. jc+cols (cols <= 2 NR: one sliver, or
// two adjacent ones at bp and bp + kc NR) times the packed A rows [0, mc): C rows ic .. ic+mc.
inline void slivers_times_rows(int kc, const float* packed_a, int mc, const float* bp, float* C, int64_t ldc, int ic,
                               int jc, int cols, bool add);

inline void sliver_times_rows(int kc, const float* packed_a, int mc, const float* bp, float* C, int64_t ldc, int ic,
                              int jc, int cols, bool add) {
  for (int ir = 0; ir < mc; ir += MR) {
    const float* ap = packed_a + (int64_t)ir * kc;
#ifdef FLORA_X86
    if (g_kernel == micro_avx512 && ir + 2 * MR <= mc) {
      micro_avx512_x2(kc, ap, ap + (int64_t)MR * kc, bp, C + (int64_t)(ic + ir) * ldc + jc, ldc, add, cols);
      ir += MR;
      continue;
    }
#endif
    g_kernel(kc, ap, bp, C + (int64_t)(ic + ir) * ldc + jc, ldc, add, std::min(MR, mc - ir), cols);
  }
}

inline void slivers_times_rows(int kc, const float* packed_a, int mc, const float* bp, float* C, int64_t ldc, int ic,
                               int jc, int cols, bool add) {
  if (cols <= NR) {
    sliver_times_rows(kc, packed_a, mc, bp, C, ldc, ic, jc, cols, add);
    return;
  }
  int ir = 0;
#ifdef FLORA_X86
  if (g_kernel == micro_avx512) {
    for (; ir + 2 * MR <= mc; ir += 2 * MR) {
      const float* ap = packed_a + (int64_t)ir * kc;
      micro_avx512_12x32(kc, ap, ap + (int64_t)MR * kc, bp, bp + (int64_t)NR * kc, C + (int64_t)(ic + ir) * ldc + jc, ldc,
                         add, cols);
    }
  }
#endif
  if (ir < mc) {
    // The rows left (or every row, on the other kernels): one sliver at a time.
    sliver_times_rows(kc, packed_a + (int64_t)ir * kc, mc - ir, bp, C, ldc, ic + ir, jc, NR, add);
    sliver_times_rows(kc, packed_a + (int64_t)ir * kc, mc - ir, bp + (int64_t)NR * kc, C, ldc, ic + ir, jc + NR, cols - NR, add);
  }
}

void gemm_block(const Operand& A, const Operand& B, float* C, int64_t ldc, int i0, int i1, int j0, int j1,
                int k, bool accumulate, Scratch& s) {
  if (i1 - i0 <= THIN_M && k > 0) {
    // Thin path: every row of A packed once per KC block (it stays in L2), then each NR-column
    // sliver of B packed into L1 just before the rows use it, so B goes from its storage to the
    // micro-kernels once and the packed block never round-trips through memory (with few rows
    // per product, that traffic, not arithmetic, bounds the blocked loop below). The same KC
    // blocks and micro-kernels, in the same order per element: the same bits.
    const int mc = i1 - i0;
    // pack_a writes whole slivers of MR rows: THIN_M rows rounded up to a multiple of MR.
    constexpr size_t THIN_A = (size_t)(THIN_M + MR - 1) / MR * MR * KC;
    if (s.thin_a.size() < THIN_A) s.thin_a.resize(THIN_A);
    for (int pc = 0; pc < k; pc += KC) {
      const int kc = std::min(KC, k - pc);
      const bool add = accumulate || pc > 0;
      pack_a(A, i0, mc, pc, kc, s.thin_a.data());
      for (int jc = j0; jc < j1; jc += 2 * NR) {
        const int cols = std::min(2 * NR, j1 - jc);
        pack_b(B, pc, kc, jc, cols, s.b.data());
        slivers_times_rows(kc, s.thin_a.data(), mc, s.b.data(), C, ldc, i0, jc, cols, add);
      }
    }
    return;
  }
  for (int jc = j0; jc < j1; jc += NC) {
    const int nc = std::min(NC, j1 - jc);
    for (int pc = 0; pc < k; pc += KC) {
      const int kc = std::min(KC, k - pc);
      const bool add = accumulate || pc > 0;
      pack_b(B, pc, kc, jc, nc, s.b.data());
      for (int ic = i0; ic < i1; ic += MC) {
        const int mc = std::min(MC, i1 - ic);
        pack_a(A, ic, mc, pc, kc, s.a.data());
        for (int jr = 0; jr < nc; jr += 2 * NR) {
          slivers_times_rows(kc, s.a.data(), mc, s.b.data() + (int64_t)jr * kc, C, ldc, ic, jc + jr, std::min(2 * NR, nc - jr), add);
        }
      }
    }
    if (k == 0 && !accumulate) {
      for (int i = i0; i < i1; i++) std::memset(C + (int64_t)i * ldc + jc, 0, nc * sizeof(float));
    }
  }
}

// ---------------------------------------------------------------------------------------
// thread pool: the calling thread plus (threads - 1) workers; tasks are claimed from an
// atomic counter, each task writes a disjoint part of C.
// ---------------------------------------------------------------------------------------

// Waiting threads spin this long before they sleep: a training step issues hundreds of
// kernel calls a few hundred microseconds apart, and a futex wake-up costs tens of
// microseconds each time (measured: ~1.15x on the small benchmark step).
constexpr auto SPIN = std::chrono::microseconds(300);

inline void cpu_relax() {
#ifdef FLORA_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

class Pool {
 public:
  int threads() const { return threads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    n = std::max(1, std::min(n, 256));
    while ((int)workers_ < n - 1) {
      std::thread([this, id = workers_ + 1] { worker(id); }).detach();
      workers_++;
    }
    threads_ = n;
    scratch_.resize(n);
  }

  // Runs task(t, slot) for t in [0, tasks); slot identifies the thread's scratch.
  void run(int tasks, const std::function<void(int, Scratch&)>& task) {
    std::unique_lock<std::mutex> run_lock(run_mutex_, std::try_to_lock);
    if (!run_lock.owns_lock()) {
      // Another JS thread (a worker_thread) is using the pool: run on the caller, with the
      // caller's own packing buffers (allocated once per thread, not per call).
      static thread_local Scratch* local = nullptr;
      if (local == nullptr) local = new Scratch();
      for (int t = 0; t < tasks; t++) task(t, *local);
      return;
    }
    const int helpers = std::min(threads_, tasks) - 1;
    if (helpers <= 0) {
      for (int t = 0; t < tasks; t++) task(t, scratch_[0]);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      total_ = tasks;
      next_.store(0);
      active_.store(helpers);
      participants_ = helpers;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    drain(0);
    const auto until = std::chrono::steady_clock::now() + SPIN;
    while (active_.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < until) cpu_relax();
    if (active_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, [this] { return active_.load() == 0; });
    }
    task_ = nullptr;
  }

 private:
  void drain(int slot) {
    for (;;) {
      const int t = next_.fetch_add(1);
      if (t >= total_) return;
      (*task_)(t, scratch_[slot]);
    }
  }

  void worker(int id) {
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + SPIN;
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) cpu_relax();
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return generation_.load() != seen && participants_ > 0 && id < threads_; });
        seen = generation_.load();
        participants_--;
      }
      drain(id);
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_cv_.notify_one();
      }
    }
  }

  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int, Scratch&)>* task_ = nullptr;
  std::atomic<int> next_{0};
  int total_ = 0;
  std::atomic<int> active_{0};
  int participants_ = 0;
  std::atomic<uint64_t> generation_{0};
  int threads_ = 1;
  int workers_ = 0;
  std::vector<Scratch> scratch_{1};
};

// Never destroyed: its detached workers wait on its condition variable until the process
// ends, and destroying a condition variable with waiters blocks in glibc at exit.
Pool& g_pool = *new Pool();

void gemm(const float* a, const float* b, float* c, int batch, int m, int n, int k, bool ta, bool tb,
          int64_t stride_a, int64_t stride_b, bool accumulate, const uint16_t* bh = nullptr, int bdtype = F32) {
  const int64_t ldc = n;
  const double flops = 2.0 * batch * m * n * (double)k;
  const int threads = flops < 2e5 ? 1 : g_pool.threads();
  // Split: over the batch when it alone gives every thread work, else along the longer of
  // m and n in MC- or NC-aligned chunks (so chunk boundaries never change blocking).
  int per_item = 1;
  bool split_rows = true;
  int chunk = 0;
  if (batch < threads * 2 && threads > 1) {
    split_rows = m >= n;
    const int dim = split_rows ? m : n;
    const int align = split_rows ? MR : NR;
    const int want = std::max(1, (threads * 2 + batch - 1) / batch);  // chunks per item
    chunk = ((dim + want - 1) / want + align - 1) / align * align;
    chunk = std::max(chunk, align * 4);
    per_item = (dim + chunk - 1) / chunk;
  }
  const int tasks = batch * per_item;
  const std::function<void(int, Scratch&)> task = [&](int t, Scratch& s) {
    const int bi = t / per_item;
    const int part = t % per_item;
    Operand A{a + bi * stride_a, ta ? 1 : k, ta ? m : 1};
    Operand B{b == nullptr ? nullptr : b + bi * stride_b, tb ? 1 : n, tb ? k : 1,
              bh == nullptr ? nullptr : bh + bi * stride_b, bdtype};
    // op(A) is m x k: row i, col p at A.p[i*rs + p*cs]. Stored A is m x k (rs=k, cs=1) or
    // k x m when transposed (rs=1, cs=m). Likewise op(B) k x n.
    float* C = c + (int64_t)bi * m * n;
    int i0 = 0, i1 = m, j0 = 0, j1 = n;
    if (per_item > 1) {
      if (split_rows) {
        i0 = part * chunk;
        i1 = std::min(m, i0 + chunk);
      } else {
        j0 = part * chunk;
        j1 = std::min(n, j0 + chunk);
      }
    }
    gemm_block(A, B, C, ldc, i0, i1, j0, j1, k, accumulate, s);
  };
  if (threads == 1) {
    static thread_local Scratch* local = nullptr;
    if (local == nullptr) local = new Scratch();
    for (int t = 0; t < tasks; t++) task(t, *local);
  } else {
    g_pool.run(tasks, task);
  }
}

// ---------------------------------------------------------------------------------------
// row-parallel element-wise kernels (the fused ops of src/model/kernels.ts): each row is
// one thread's, so results do not depend on the thread count either
// ---------------------------------------------------------------------------------------

// exp(x) for float, branch-free so loops over it vectorise: Cody-Waite range reduction
// x = n ln2 + f, |f| <= ln2/2, then a degree-6 polynomial for e^f (Cephes' expf
// coefficients; about 1 ulp), scaled by 2^n through the exponent bits.
inline float exp_vec(float x) {
  x = std::min(std::max(x, -87.33654f), 88.72283f);
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick)
  const float f = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * f + 1.3981999507e-3f;
  y = y * f + 8.3334519073e-3f;
  y = y * f + 4.1665795894e-2f;
  y = y * f + 1.6666665459e-1f;
  y = y * f + 5.0000001201e-1f;
  y = y * f * f + f + 1.f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// Sum of n floats in double, four independent accumulators (a single running sum is a
// latency-bound chain; the order is fixed, so the result is deterministic).
inline double sum4(const float* x, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s[0] += x[j];
    s[1] += x[j + 1];
    s[2] += x[j + 2];
    s[3] += x[j + 3];
  }
  for (; j < n; j++) s[0] += x[j];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// sum of x[j] * y[j] in double, like sum4
inline double dot4(const float* x, const float* y, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s[0] += (double)x[j] * y[j];
    s[1] += (double)x[j + 1] * y[j + 1];
    s[2] += (double)x[j + 2] * y[j + 2];
    s[3] += (double)x[j + 3] * y[j + 3];
  }
  for (; j < n; j++) s[0] += (double)x[j] * y[j];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// max of n floats (n >= 1), 8 lanes so the compiler can vectorise it
inline float max8(const float* x, int64_t n) {
  float m[8];
  for (int l = 0; l < 8; l++) m[l] = x[0];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) m[l] = m[l] > x[j + l] ? m[l] : x[j + l];
  float mx = m[0];
  for (int l = 1; l < 8; l++) mx = mx > m[l] ? mx : m[l];
  for (; j < n; j++) mx = mx > x[j] ? mx : x[j];
  return mx;
}

// Runs fn(r0, r1) over [0, rows) in chunks of at least `grain` rows.
void parallel_rows(int64_t rows, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int threads = g_pool.threads();
  int64_t chunks = std::min<int64_t>(rows / std::max<int64_t>(grain, 1), (int64_t)threads * 4);
  if (threads == 1 || chunks <= 1) {
    fn(0, rows);
    return;
  }
  const int64_t per = (rows + chunks - 1) / chunks;
  chunks = (rows + per - 1) / per;
  g_pool.run((int)chunks, [&](int t, Scratch&) { fn(t * per, std::min(rows, (t + 1) * per)); });
}

// y = x * r * w with r = 1 / sqrt(mean(x^2) + eps), per row of d
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, double eps) {
  parallel_rows(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      double ss = 0;
      for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
      const float rs = (float)(1.0 / std::sqrt(ss / d + eps));
      for (int64_t j = 0; j < d; j++) yr[j] = xr[j] * rs * w[j];
    }
  });
}

// dx = r (w dy) - x r^3 mean(x w dy)
void rms_norm_grad(const float* dy, const float* x, const float* w, float* dx, int64_t rows, int64_t d, double eps) {
  parallel_rows(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * d;
      const float* gr = dy + r * d;
      float* dr = dx + r * d;
      double ss = 0, dot = 0;
      for (int64_t j = 0; j < d; j++) {
        ss += (double)xr[j] * xr[j];
        dot += (double)xr[j] * w[j] * gr[j];
      }
      const double rs = 1.0 / std::sqrt(ss / d + eps);
      const float c = (float)(rs * rs * rs * dot / d);
      const float rf = (float)rs;
      for (int64_t j = 0; j < d; j++) dr[j] = rf * w[j] * gr[j] - xr[j] * c;
    }
  });
}

// x [rows = B*T*H, hd] with position (row / heads) % t; tables [t, hd]
void rope(const float* x, const float* cos, const float* sin, float* y, int64_t rows, int64_t t, int64_t heads,
          int64_t hd, bool transposed) {
  const int64_t half = hd / 2;
  parallel_rows(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; row++) {
      const int64_t p = (row / heads) % t;
      const float* xr = x + row * hd;
      float* yr = y + row * hd;
      const float* c = cos + p * hd;
      const float* s = sin + p * hd;
      if (transposed) {
        for (int64_t j = 0; j < half; j++) {
          yr[j] = xr[j] * c[j] + xr[half + j] * s[half + j];
          yr[half + j] = xr[half + j] * c[half + j] - xr[j] * s[j];
        }
      } else {
        for (int64_t j = 0; j < half; j++) {
          yr[j] = xr[j] * c[j] - xr[half + j] * s[j];
          yr[half + j] = xr[half + j] * c[half + j] + xr[j] * s[half + j];
        }
      }
    }
  });
}

// Mean cross-entropy of logits [m, v] against targets; grad (optional) = (softmax - onehot) / m.
// Returns the mean loss. Per-row partial sums are added in row order (deterministic).
double cross_entropy(const float* z, const int32_t* targets, float* grad, int64_t m, int64_t v) {
  std::vector<double> row_loss(m);
  parallel_rows(m, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      const float* row = z + i * v;
      const float mx = max8(row, v);
      // exps into g (or a row buffer), then a sum in double with 4 independent accumulators
      thread_local std::vector<float> buffer;
      float* g = grad != nullptr ? grad + i * v : nullptr;
      if (g == nullptr) {
        buffer.resize(v);
        g = buffer.data();
      }
      for (int64_t j = 0; j < v; j++) g[j] = exp_vec(row[j] - mx);
      const double sum = sum4(g, v);
      if (grad != nullptr) {
        const float scale = (float)(1.0 / (sum * m));
        for (int64_t j = 0; j < v; j++) g[j] *= scale;
        g[targets[i]] -= (float)(1.0 / m);
      }
      row_loss[i] = std::log(sum) + mx - row[targets[i]];
    }
  });
  double total = 0;
  for (int64_t i = 0; i < m; i++) total += row_loss[i];
  return total / m;
}

// ---------------------------------------------------------------------------------------
// fused causal attention on the projections' own layout (no head transposes)
//   q [B, T, H, hd], k, v [B, T, KV, hd]; query head h reads kv head h / (H / KV) (GQA)
//   P_h = softmax(scale Q_h K_g^T) over keys j <= i,  O_h = P_h V_g,  out [B, T, H, hd]
// Rows go in blocks of ATT_RB queries, and a block only computes the keys it can see (j <
// its last row + 1): about 40% fewer FLOPs than the full T x T products at T = 128. One task
// per (batch, kv head), its query heads in order: every output element has one writer and a
// fixed summation order (dK, dV sum the group's heads in head order).
// ---------------------------------------------------------------------------------------

constexpr int ATT_RB = 32;

struct AttnShape {
  int64_t b, t, h, kv, hd;
  float scale;
};

// C[0:mc, 0:nc] (+)= packed A (mc rows, kc) x packed B (slivers `sliver` floats apart, the
// first kc entries of each used).
void run_tiles(const float* ap, int mc, const float* bp, int64_t sliver, int nc, int kc, float* C, int64_t ldc, bool add) {
  for (int jr = 0; jr < nc; jr += NR) {
    const float* bq = bp + (jr / NR) * sliver;
    for (int ir = 0; ir < mc; ir += MR) {
      g_kernel(kc, ap + (int64_t)ir * kc, bq, C + (int64_t)ir * ldc + jr, ldc, add, std::min(MR, mc - ir), std::min(NR, nc - jr));
    }
  }
}

// One operand packed as B over its whole extent: op(B) is kc x nc, slivers of NR columns
// (kc * NR floats each). A prefix [0, k') of the inner dimension is the first k' * NR
// floats of every sliver; a suffix [p0, kc) starts p0 * NR floats in.
struct PackedB {
  std::vector<float> data;
  int64_t sliver = 0;
  void pack(const Operand& b, int kc, int nc) {
    data.resize((size_t)((nc + NR - 1) / NR) * NR * kc);
    sliver = (int64_t)kc * NR;
    pack_b(b, 0, kc, 0, nc, data.data());
  }
};

bool attention_fast_path(const AttnShape& a) { return a.hd <= KC && a.t <= KC && a.t <= NC; }

void softmax_block(float* p, int64_t t, int i0, int i1, float scale) {
  for (int64_t i = i0; i < i1; i++) {
    float* row = p + i * t;
    const int64_t n = i + 1;
    const float mx = max8(row, n);
    for (int64_t j = 0; j < n; j++) row[j] = exp_vec(scale * (row[j] - mx));
    const float inv = (float)(1.0 / sum4(row, n));
    for (int64_t j = 0; j < n; j++) row[j] *= inv;
    for (int64_t j = n; j < t; j++) row[j] = 0.f;
  }
}

void attention(const float* q, const float* k, const float* v, float* out, float* probs, const AttnShape& a) {
  const int64_t rep = a.h / a.kv, t = a.t, hd = a.hd;
  const int64_t qs = a.h * hd, ks = a.kv * hd;  // row strides
  const bool fast = attention_fast_path(a);
  g_pool.run((int)(a.b * a.kv), [&](int task, Scratch& s) {
    const int64_t bi = task / a.kv, g = task % a.kv;
    const float* kb = k + (bi * t * a.kv + g) * hd;
    const float* vb = v + (bi * t * a.kv + g) * hd;
    thread_local PackedB kt, vp;
    if (fast) {
      kt.pack(Operand{kb, 1, ks}, (int)hd, (int)t);  // K^T: hd x t
      vp.pack(Operand{vb, ks, 1}, (int)t, (int)hd);  // V: t x hd
    }
    for (int64_t r = 0; r < rep; r++) {
      const int64_t hh = g * rep + r;
      float* p = probs + (bi * a.h + hh) * t * t;
      const float* qb = q + (bi * t * a.h + hh) * hd;
      float* ob = out + (bi * t * a.h + hh) * hd;
      for (int i0 = 0; i0 < t; i0 += ATT_RB) {
        const int i1 = (int)std::min<int64_t>(t, i0 + ATT_RB);
        const int mc = i1 - i0;
        if (fast) {
          pack_a(Operand{qb, qs, 1}, i0, mc, 0, (int)hd, s.a.data());
          run_tiles(s.a.data(), mc, kt.data.data(), kt.sliver, i1, (int)hd, p + (int64_t)i0 * t, t, false);
          softmax_block(p, t, i0, i1, a.scale);
          pack_a(Operand{p, t, 1}, i0, mc, 0, i1, s.a.data());
          run_tiles(s.a.data(), mc, vp.data.data(), vp.sliver, (int)hd, i1, ob + (int64_t)i0 * qs, qs, false);
        } else {
          gemm_block(Operand{qb, qs, 1}, Operand{kb, 1, ks}, p, t, i0, i1, 0, i1, (int)hd, false, s);
          softmax_block(p, t, i0, i1, a.scale);
          gemm_block(Operand{p, t, 1}, Operand{vb, ks, 1}, ob, qs, i0, i1, 0, (int)hd, i1, false, s);
        }
      }
    }
  });
}

void attention_grad(const float* dout, const float* q, const float* k, const float* v, const float* probs, float* dq,
                    float* dk, float* dv, const AttnShape& a) {
  const int64_t rep = a.h / a.kv, t = a.t, hd = a.hd;
  const int64_t qs = a.h * hd, ks = a.kv * hd;
  const bool fast = attention_fast_path(a);
  g_pool.run((int)(a.b * a.kv), [&](int task, Scratch& s) {
    thread_local std::vector<float> ds_buf;
    ds_buf.resize((size_t)(t * t));
    float* ds = ds_buf.data();
    const int64_t bi = task / a.kv, g = task % a.kv;
    const float* kb = k + (bi * t * a.kv + g) * hd;
    const float* vb = v + (bi * t * a.kv + g) * hd;
    float* dkb = dk + (bi * t * a.kv + g) * hd;
    float* dvb = dv + (bi * t * a.kv + g) * hd;
    thread_local PackedB vt, kp, qp, dop;
    if (fast) {
      vt.pack(Operand{vb, 1, ks}, (int)hd, (int)t);  // V^T: hd x t
      kp.pack(Operand{kb, ks, 1}, (int)t, (int)hd);  // K: t x hd
    }
    for (int64_t r = 0; r < rep; r++) {
      const int64_t hh = g * rep + r;
      const float* p = probs + (bi * a.h + hh) * t * t;
      const float* qb = q + (bi * t * a.h + hh) * hd;
      const float* dob = dout + (bi * t * a.h + hh) * hd;
      float* dqb = dq + (bi * t * a.h + hh) * hd;
      for (int i0 = 0; i0 < t; i0 += ATT_RB) {
        const int i1 = (int)std::min<int64_t>(t, i0 + ATT_RB);
        const int mc = i1 - i0;
        // dP rows [i0, i1), keys [0, i1) = dO V^T
        if (fast) {
          pack_a(Operand{dob, qs, 1}, i0, mc, 0, (int)hd, s.a.data());
          run_tiles(s.a.data(), mc, vt.data.data(), vt.sliver, i1, (int)hd, ds + (int64_t)i0 * t, t, false);
        } else {
          gemm_block(Operand{dob, qs, 1}, Operand{vb, 1, ks}, ds, t, i0, i1, 0, i1, (int)hd, false, s);
        }
        // dS = scale P (dP - rowsum(dP P)), 0 above the diagonal
        for (int64_t i = i0; i < i1; i++) {
          float* d = ds + i * t;
          const float* pr = p + i * t;
          const int64_t n = i + 1;
          const float dt = (float)dot4(d, pr, n);
          for (int64_t j = 0; j < n; j++) d[j] = a.scale * pr[j] * (d[j] - dt);
          for (int64_t j = n; j < t; j++) d[j] = 0.f;
        }
        // dQ rows [i0, i1) = dS[:, :i1] K[:i1]
        if (fast) {
          pack_a(Operand{ds, t, 1}, i0, mc, 0, i1, s.a.data());
          run_tiles(s.a.data(), mc, kp.data.data(), kp.sliver, (int)hd, i1, dqb + (int64_t)i0 * qs, qs, false);
        } else {
          gemm_block(Operand{ds, t, 1}, Operand{kb, ks, 1}, dqb, qs, i0, i1, 0, (int)hd, i1, false, s);
        }
      }
      // Key blocks: dK, dV rows [j0, j1) sum over queries i >= j0 (P and dS are 0 above the
      // diagonal), so the inner dimension starts at query j0.
      if (fast) {
        qp.pack(Operand{qb, qs, 1}, (int)t, (int)hd);    // Q_h: t x hd
        dop.pack(Operand{dob, qs, 1}, (int)t, (int)hd);  // dO_h: t x hd
      }
      for (int j0 = 0; j0 < t; j0 += ATT_RB) {
        const int j1 = (int)std::min<int64_t>(t, j0 + ATT_RB);
        const int mc = j1 - j0;
        const int n = (int)(t - j0);
        if (fast) {
          // dV (+)= P^T dO
          pack_a(Operand{p + (int64_t)j0 * t, 1, t}, j0, mc, 0, n, s.a.data());
          run_tiles(s.a.data(), mc, dop.data.data() + (int64_t)j0 * NR, dop.sliver, (int)hd, n, dvb + (int64_t)j0 * ks, ks, r > 0);
          // dK (+)= dS^T Q
          pack_a(Operand{ds + (int64_t)j0 * t, 1, t}, j0, mc, 0, n, s.a.data());
          run_tiles(s.a.data(), mc, qp.data.data() + (int64_t)j0 * NR, qp.sliver, (int)hd, n, dkb + (int64_t)j0 * ks, ks, r > 0);
        } else {
          gemm_block(Operand{p + (int64_t)j0 * t, 1, t}, Operand{dob + j0 * qs, qs, 1}, dvb, ks, j0, j1, 0, (int)hd, n, r > 0, s);
          gemm_block(Operand{ds + (int64_t)j0 * t, 1, t}, Operand{qb + j0 * qs, qs, 1}, dkb, ks, j0, j1, 0, (int)hd, n, r > 0, s);
        }
      }
    }
  });
}

// h = silu(g) * u = g sigmoid(g) u
void swiglu(const float* g, const float* u, float* h, int64_t n) {
  parallel_rows(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float s = 1.f / (1.f + exp_vec(-g[i]));
      h[i] = g[i] * s * u[i];
    }
  });
}

// du = dy g s,  dg = dy u s (1 + g (1 - s)),  s = sigmoid(g)
void swiglu_grad(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t n) {
  parallel_rows(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float s = 1.f / (1.f + exp_vec(-g[i]));
      du[i] = dy[i] * g[i] * s;
      dg[i] = dy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
    }
  });
}

// out = a op b, b of the same length or a single value (b_len == 1); op 0 add, 1 sub, 2 mul
void binary(int op, const float* a, const float* b, float* out, int64_t n, bool b_scalar) {
  parallel_rows(n, 16384, [&](int64_t i0, int64_t i1) {
    if (b_scalar) {
      const float v = b[0];
      if (op == 0) for (int64_t i = i0; i < i1; i++) out[i] = a[i] + v;
      if (op == 1) for (int64_t i = i0; i < i1; i++) out[i] = a[i] - v;
      if (op == 2) for (int64_t i = i0; i < i1; i++) out[i] = a[i] * v;
    } else {
      if (op == 0) for (int64_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
      if (op == 1) for (int64_t i = i0; i < i1; i++) out[i] = a[i] - b[i];
      if (op == 2) for (int64_t i = i0; i < i1; i++) out[i] = a[i] * b[i];
    }
  });
}

// x [d0, d1, d2, d3] -> y [d0, d2, d1, d3] (perm 0, 2, 1, 3: attention's head transposes)
void transpose0213(const float* x, float* y, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  parallel_rows(d0 * d2, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t a = r / d2, c = r % d2;
      float* dst = y + r * d1 * d3;
      const float* src = x + (a * d1 * d2 + c) * d3;
      for (int64_t b = 0; b < d1; b++) std::memcpy(dst + b * d3, src + b * d2 * d3, d3 * sizeof(float));
    }
  });
}

// ---------------------------------------------------------------------------------------
// N-API surface
// ---------------------------------------------------------------------------------------

#define CHECK(env, call)                                            \
  do {                                                              \
    if ((call) != napi_ok) {                                        \
      napi_throw_error((env), "FLORA_NATIVE", "N-API call failed"); \
      return nullptr;                                               \
    }                                                               \
  } while (0)

bool float_array(napi_env env, napi_value v, float** data, size_t* length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return false;
  napi_typedarray_type type;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &ptr, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_float32_array) return false;
  *data = static_cast<float*>(ptr);
  return true;
}

bool int_arg(napi_env env, napi_value v, int64_t* out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) return false;
  *out = (int64_t)d;
  return true;
}

// gemm(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, accumulate)
napi_value Gemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc != 12) {
    napi_throw_type_error(env, "FLORA_NATIVE", "gemm expects 12 arguments");
    return nullptr;
  }
  float *a, *b, *c;
  size_t la, lb, lc;
  if (!float_array(env, argv[0], &a, &la) || !float_array(env, argv[1], &b, &lb) ||
      !float_array(env, argv[2], &c, &lc)) {
    napi_throw_type_error(env, "FLORA_NATIVE", "gemm: a, b and c must be Float32Arrays");
    return nullptr;
  }
  int64_t dims[4], strides[2];
  for (int i = 0; i < 4; i++) {
    if (!int_arg(env, argv[3 + i], &dims[i]) || dims[i] > INT32_MAX) {
      napi_throw_range_error(env, "FLORA_NATIVE", "gemm: batch, m, n, k must be non-negative int32");
      return nullptr;
    }
  }
  bool ta, tb, acc;
  CHECK(env, napi_get_value_bool(env, argv[7], &ta));
  CHECK(env, napi_get_value_bool(env, argv[8], &tb));
  for (int i = 0; i < 2; i++) {
    if (!int_arg(env, argv[9 + i], &strides[i])) {
      napi_throw_range_error(env, "FLORA_NATIVE", "gemm: strides must be non-negative integers");
      return nullptr;
    }
  }
  CHECK(env, napi_get_value_bool(env, argv[11], &acc));
  const int64_t batch = dims[0], m = dims[1], n = dims[2], k = dims[3];
  if (batch == 0 || m == 0 || n == 0) return nullptr;
  const auto need = [&](int64_t stride, int64_t item) { return (batch - 1) * stride + item; };
  if ((uint64_t)need(strides[0], m * k) > la || (uint64_t)need(strides[1], k * n) > lb ||
      (uint64_t)(batch * m * n) > lc) {
    napi_throw_range_error(env, "FLORA_NATIVE", "gemm: an operand is shorter than its shape needs");
    return nullptr;
  }
  gemm(a, b, c, (int)batch, (int)m, (int)n, (int)k, ta, tb, strides[0], strides[1], acc);
  return nullptr;
}

bool int32_array(napi_env env, napi_value v, int32_t** data, size_t* length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return false;
  napi_typedarray_type type;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &ptr, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_int32_array) return false;
  *data = static_cast<int32_t*>(ptr);
  return true;
}

// Reads argv[i] as a Float32Array of at least `need` elements; throws and returns false if not.
bool f32_arg(napi_env env, napi_value v, int64_t need, float** out, const char* what) {
  size_t len;
  if (!float_array(env, v, out, &len)) {
    napi_throw_type_error(env, "FLORA_NATIVE", (std::string(what) + " must be a Float32Array").c_str());
    return false;
  }
  if ((int64_t)len < need) {
    napi_throw_range_error(env, "FLORA_NATIVE", (std::string(what) + " is shorter than its shape needs").c_str());
    return false;
  }
  return true;
}

bool dims_arg(napi_env env, napi_value* argv, int count, int64_t* out) {
  for (int i = 0; i < count; i++) {
    if (!int_arg(env, argv[i], &out[i]) || out[i] > INT32_MAX) {
      napi_throw_range_error(env, "FLORA_NATIVE", "sizes must be non-negative int32");
      return false;
    }
  }
  return true;
}

// rmsNorm(x, w, y, rows, d, eps)
napi_value RmsNorm(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t dims[2];
  double eps;
  float *x, *w, *y;
  if (argc != 6 || !dims_arg(env, argv + 3, 2, dims)) return nullptr;
  CHECK(env, napi_get_value_double(env, argv[5], &eps));
  if (!f32_arg(env, argv[0], dims[0] * dims[1], &x, "x") || !f32_arg(env, argv[1], dims[1], &w, "w") ||
      !f32_arg(env, argv[2], dims[0] * dims[1], &y, "y"))
    return nullptr;
  rms_norm(x, w, y, dims[0], dims[1], eps);
  return nullptr;
}

// rmsNormGrad(dy, x, w, dx, rows, d, eps)
napi_value RmsNormGrad(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t dims[2];
  double eps;
  float *dy, *x, *w, *dx;
  if (argc != 7 || !dims_arg(env, argv + 4, 2, dims)) return nullptr;
  CHECK(env, napi_get_value_double(env, argv[6], &eps));
  const int64_t n = dims[0] * dims[1];
  if (!f32_arg(env, argv[0], n, &dy, "dy") || !f32_arg(env, argv[1], n, &x, "x") ||
      !f32_arg(env, argv[2], dims[1], &w, "w") || !f32_arg(env, argv[3], n, &dx, "dx"))
    return nullptr;
  rms_norm_grad(dy, x, w, dx, dims[0], dims[1], eps);
  return nullptr;
}

// rope(x, cos, sin, y, rows, t, heads, hd, transposed)
napi_value Rope(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t dims[4];
  bool transposed;
  float *x, *c, *s, *y;
  if (argc != 9 || !dims_arg(env, argv + 4, 4, dims)) return nullptr;
  CHECK(env, napi_get_value_bool(env, argv[8], &transposed));
  const int64_t rows = dims[0], t = dims[1], heads = dims[2], hd = dims[3];
  if (heads == 0 || t == 0 || hd % 2 != 0) {
    napi_throw_range_error(env, "FLORA_NATIVE", "rope: heads and t must be positive and hd even");
    return nullptr;
  }
  if (!f32_arg(env, argv[0], rows * hd, &x, "x") || !f32_arg(env, argv[1], t * hd, &c, "cos") ||
      !f32_arg(env, argv[2], t * hd, &s, "sin") || !f32_arg(env, argv[3], rows * hd, &y, "y"))
    return nullptr;
  rope(x, c, s, y, rows, t, heads, hd, transposed);
  return nullptr;
}

// crossEntropy(logits, targets, grad | null, m, v) -> mean loss
napi_value CrossEntropy(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t dims[2];
  float *z, *grad = nullptr;
  int32_t* targets;
  size_t tlen;
  if (argc != 5 || !dims_arg(env, argv + 3, 2, dims)) return nullptr;
  const int64_t m = dims[0], v = dims[1];
  if (!f32_arg(env, argv[0], m * v, &z, "logits")) return nullptr;
  if (!int32_array(env, argv[1], &targets, &tlen) || (int64_t)tlen < m) {
    napi_throw_type_error(env, "FLORA_NATIVE", "targets must be an Int32Array of m entries");
    return nullptr;
  }
  for (int64_t i = 0; i < m; i++) {
    if (targets[i] < 0 || targets[i] >= v) {
      napi_throw_range_error(env, "FLORA_NATIVE", "a target is outside [0, v)");
      return nullptr;
    }
  }
  napi_valuetype gt;
  CHECK(env, napi_typeof(env, argv[2], &gt));
  if (gt != napi_null && gt != napi_undefined && !f32_arg(env, argv[2], m * v, &grad, "grad")) return nullptr;
  napi_value out;
  CHECK(env, napi_create_double(env, m == 0 ? 0.0 : cross_entropy(z, targets, grad, m, v), &out));
  return out;
}

bool attn_shape(napi_env env, napi_value* argv, napi_value scale_v, AttnShape* a) {
  int64_t d[5];
  if (!dims_arg(env, argv, 5, d)) return false;
  double scale;
  if (napi_get_value_double(env, scale_v, &scale) != napi_ok) {
    napi_throw_type_error(env, "FLORA_NATIVE", "attention: scale must be a number");
    return false;
  }
  if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[3] == 0 || d[4] == 0 || d[2] % d[3] != 0) {
    napi_throw_range_error(env, "FLORA_NATIVE", "attention: sizes must be positive and heads a multiple of kv heads");
    return false;
  }
  *a = AttnShape{d[0], d[1], d[2], d[3], d[4], (float)scale};
  return true;
}

// attention(q, k, v, out, probs, b, t, h, kv, hd, scale)
napi_value Attention(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  AttnShape a;
  if (argc != 11 || !attn_shape(env, argv + 5, argv[10], &a)) return nullptr;
  const int64_t nq = a.b * a.t * a.h * a.hd, nk = a.b * a.t * a.kv * a.hd, np = a.b * a.h * a.t * a.t;
  float *q, *k, *v, *out, *probs;
  if (!f32_arg(env, argv[0], nq, &q, "q") || !f32_arg(env, argv[1], nk, &k, "k") || !f32_arg(env, argv[2], nk, &v, "v") ||
      !f32_arg(env, argv[3], nq, &out, "out") || !f32_arg(env, argv[4], np, &probs, "probs"))
    return nullptr;
  attention(q, k, v, out, probs, a);
  return nullptr;
}

// attentionGrad(dout, q, k, v, probs, dq, dk, dv, b, t, h, kv, hd, scale)
napi_value AttentionGrad(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value argv[14];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  AttnShape a;
  if (argc != 14 || !attn_shape(env, argv + 8, argv[13], &a)) return nullptr;
  const int64_t nq = a.b * a.t * a.h * a.hd, nk = a.b * a.t * a.kv * a.hd, np = a.b * a.h * a.t * a.t;
  float *dout, *q, *k, *v, *probs, *dq, *dk, *dv;
  if (!f32_arg(env, argv[0], nq, &dout, "dout") || !f32_arg(env, argv[1], nq, &q, "q") || !f32_arg(env, argv[2], nk, &k, "k") ||
      !f32_arg(env, argv[3], nk, &v, "v") || !f32_arg(env, argv[4], np, &probs, "probs") || !f32_arg(env, argv[5], nq, &dq, "dq") ||
      !f32_arg(env, argv[6], nk, &dk, "dk") || !f32_arg(env, argv[7], nk, &dv, "dv"))
    return nullptr;
  attention_grad(dout, q, k, v, probs, dq, dk, dv, a);
  return nullptr;
}

// swiglu(g, u, h, n)
napi_value Swiglu(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t n;
  float *g, *u, *h;
  if (argc != 4 || !dims_arg(env, argv + 3, 1, &n)) return nullptr;
  if (!f32_arg(env, argv[0], n, &g, "g") || !f32_arg(env, argv[1], n, &u, "u") || !f32_arg(env, argv[2], n, &h, "h"))
    return nullptr;
  swiglu(g, u, h, n);
  return nullptr;
}

// swigluGrad(dy, g, u, dg, du, n)
napi_value SwigluGrad(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t n;
  float *dy, *g, *u, *dg, *du;
  if (argc != 6 || !dims_arg(env, argv + 5, 1, &n)) return nullptr;
  if (!f32_arg(env, argv[0], n, &dy, "dy") || !f32_arg(env, argv[1], n, &g, "g") || !f32_arg(env, argv[2], n, &u, "u") ||
      !f32_arg(env, argv[3], n, &dg, "dg") || !f32_arg(env, argv[4], n, &du, "du"))
    return nullptr;
  swiglu_grad(dy, g, u, dg, du, n);
  return nullptr;
}

// binary(op, a, b, out, n) with op 0 add / 1 sub / 2 mul; b has n elements or 1
napi_value Binary(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t dims[2];
  float *a, *b, *out;
  if (argc != 5 || !dims_arg(env, argv, 1, dims) || !dims_arg(env, argv + 4, 1, dims + 1)) return nullptr;
  const int64_t op = dims[0], n = dims[1];
  if (op > 2) {
    napi_throw_range_error(env, "FLORA_NATIVE", "binary: op must be 0 (add), 1 (sub) or 2 (mul)");
    return nullptr;
  }
  size_t lb;
  if (!f32_arg(env, argv[1], n, &a, "a") || !f32_arg(env, argv[3], n, &out, "out")) return nullptr;
  if (!float_array(env, argv[2], &b, &lb) || (lb != 1 && (int64_t)lb < n)) {
    napi_throw_range_error(env, "FLORA_NATIVE", "binary: b must be a Float32Array of n elements or 1");
    return nullptr;
  }
  binary((int)op, a, b, out, n, lb == 1 && n != 1);
  return nullptr;
}

// transpose0213(x, y, d0, d1, d2, d3)
napi_value Transpose0213(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t d[4];
  float *x, *y;
  if (argc != 6 || !dims_arg(env, argv + 2, 4, d)) return nullptr;
  const int64_t n = d[0] * d[1] * d[2] * d[3];
  if (!f32_arg(env, argv[0], n, &x, "x") || !f32_arg(env, argv[1], n, &y, "y")) return nullptr;
  transpose0213(x, y, d[0], d[1], d[2], d[3]);
  return nullptr;
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t n;
  if (argc != 1 || !int_arg(env, argv[0], &n) || n < 1 || n > 256) {
    napi_throw_range_error(env, "FLORA_NATIVE", "setThreads expects an integer in [1, 256]");
    return nullptr;
  }
  g_pool.resize((int)n);
  return nullptr;
}

napi_value Info(napi_env env, napi_callback_info) {
  napi_value obj, isa, threads;
  CHECK(env, napi_create_object(env, &obj));
  CHECK(env, napi_create_string_utf8(env, g_isa, NAPI_AUTO_LENGTH, &isa));
  CHECK(env, napi_create_int32(env, g_pool.threads(), &threads));
  CHECK(env, napi_set_named_property(env, obj, "isa", isa));
  CHECK(env, napi_set_named_property(env, obj, "threads", threads));
  return obj;
}

napi_value SetIsa(napi_env env, napi_callback_info info) {
  // setIsa('generic') forces the portable kernel (tests compare the two paths).
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  char buf[32] = {0};
  size_t len = 0;
  if (argc != 1 || napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, "FLORA_NATIVE", "setIsa expects a string");
    return nullptr;
  }
  const std::string want(buf, len);
  if (want == "generic") {
    g_kernel = micro_generic;
    g_isa = "generic";
    return nullptr;
  }
#ifdef FLORA_X86
  if (want == "avx2-fma" && cpu_has_avx2_fma()) {
    g_kernel = micro_avx2;
    g_isa = "avx2-fma";
    return nullptr;
  }
  if (want == "avx512" && cpu_has_avx512()) {
    g_kernel = micro_avx512;
    g_isa = "avx512";
    return nullptr;
  }
#endif
  napi_throw_error(env, "FLORA_NATIVE", ("this CPU cannot run the '" + want + "' kernel").c_str());
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// frozen weights: a linear layer's base weight W [rows = out, cols = in], owned here (out
// of the JS and wasm heaps) in the checkpoint's precision, for y = x W^T and dx = dy W.
// Half-precision values are widened exactly as they are packed, so the products equal the
// float32 GEMM of the widened weights, bit for bit.
// ---------------------------------------------------------------------------------------

struct FrozenWeight {
  int64_t rows = 0, cols = 0;
  int dtype = F32;
  void* data = nullptr;
  int64_t bytes = 0;
};

void frozen_finalize(napi_env env, void* data, void*) {
  auto* w = static_cast<FrozenWeight*>(data);
  if (w->data != nullptr) {
    std::free(w->data);
    int64_t ignored;
    napi_adjust_external_memory(env, -w->bytes, &ignored);
  }
  delete w;
}

bool frozen_arg(napi_env env, napi_value v, FrozenWeight** out) {
  void* p = nullptr;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return false;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == nullptr) return false;
  *out = static_cast<FrozenWeight*>(p);
  return (*out)->data != nullptr;
}

// frozenCreate(values: Float32Array | Uint16Array, rows, cols, dtype 0 f32 | 1 bf16 | 2 f16) -> handle (copies values)
napi_value FrozenCreate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t rows, cols, dtype;
  if (argc != 4 || !int_arg(env, argv[1], &rows) || !int_arg(env, argv[2], &cols) || !int_arg(env, argv[3], &dtype) ||
      dtype > F16 || rows == 0 || cols == 0 || rows > INT32_MAX || cols > INT32_MAX) {
    napi_throw_type_error(env, "FLORA_NATIVE", "frozenCreate(values, rows, cols, dtype 0|1|2)");
    return nullptr;
  }
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length = 0;
  void* src = nullptr;
  if (napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &src, nullptr, nullptr) != napi_ok ||
      type != (dtype == F32 ? napi_float32_array : napi_uint16_array) || (int64_t)length != rows * cols) {
    napi_throw_type_error(env, "FLORA_NATIVE", "frozenCreate: values must be a Float32Array (dtype 0) or Uint16Array (1, 2) of rows * cols");
    return nullptr;
  }
  auto* w = new FrozenWeight();
  w->rows = rows;
  w->cols = cols;
  w->dtype = (int)dtype;
  w->bytes = rows * cols * (dtype == F32 ? 4 : 2);
  w->data = std::malloc((size_t)w->bytes);
  if (w->data == nullptr) {
    delete w;
    napi_throw_error(env, "FLORA_NATIVE", "frozenCreate: out of memory");
    return nullptr;
  }
  std::memcpy(w->data, src, (size_t)w->bytes);
  int64_t ignored;
  napi_adjust_external_memory(env, w->bytes, &ignored);
  napi_value handle;
  CHECK(env, napi_create_external(env, w, frozen_finalize, nullptr, &handle));
  return handle;
}

// frozenFree(handle): releases the memory now (the handle is unusable afterwards).
napi_value FrozenFree(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  FrozenWeight* w;
  if (argc != 1 || !frozen_arg(env, argv[0], &w)) return nullptr;
  std::free(w->data);
  w->data = nullptr;
  int64_t ignored;
  napi_adjust_external_memory(env, -w->bytes, &ignored);
  return nullptr;
}

// frozenMatMul(handle, x, y, m, transposed): y[m, rows] = x[m, cols] W^T, or with
// transposed y[m, cols] = x[m, rows] W.
napi_value FrozenMatMul(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  FrozenWeight* w;
  float *x, *y;
  size_t lx, ly;
  int64_t m;
  bool transposed;
  if (argc != 5 || !frozen_arg(env, argv[0], &w) || !float_array(env, argv[1], &x, &lx) ||
      !float_array(env, argv[2], &y, &ly) || !int_arg(env, argv[3], &m) || m > INT32_MAX ||
      napi_get_value_bool(env, argv[4], &transposed) != napi_ok) {
    napi_throw_type_error(env, "FLORA_NATIVE", "frozenMatMul(handle, x: Float32Array, y: Float32Array, m, transposed)");
    return nullptr;
  }
  const int64_t in = transposed ? w->rows : w->cols, out = transposed ? w->cols : w->rows;
  if ((int64_t)lx < m * in || (int64_t)ly < m * out) {
    napi_throw_range_error(env, "FLORA_NATIVE", "frozenMatMul: x or y is shorter than its shape needs");
    return nullptr;
  }
  if (m == 0) return nullptr;
  // op(B) is k x n: W^T (stored rows x cols, transposed) for the forward product, W for the backward.
  const bool tb = !transposed;
  if (w->dtype == F32) {
    gemm(x, static_cast<const float*>(w->data), y, 1, (int)m, (int)out, (int)in, false, tb, 0, 0, false);
  } else {
    gemm(x, nullptr, y, 1, (int)m, (int)out, (int)in, false, tb, 0, 0, false, static_cast<const uint16_t*>(w->data), w->dtype);
  }
  return nullptr;
}

// frozenRead(handle, out: Float32Array): the weight widened to float32, [rows, cols].
napi_value FrozenRead(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  FrozenWeight* w;
  float* out;
  size_t lo;
  if (argc != 2 || !frozen_arg(env, argv[0], &w) || !float_array(env, argv[1], &out, &lo) || (int64_t)lo < w->rows * w->cols) {
    napi_throw_type_error(env, "FLORA_NATIVE", "frozenRead(handle, out: Float32Array of rows * cols)");
    return nullptr;
  }
  const int64_t n = w->rows * w->cols;
  if (w->dtype == F32) {
    std::memcpy(out, w->data, (size_t)n * sizeof(float));
  } else {
    const auto* h = static_cast<const uint16_t*>(w->data);
    for (int64_t i = 0; i < n; i++) out[i] = half_to_f32(h[i], w->dtype);
  }
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  static std::once_flag once;
  std::call_once(once, [] {
#ifdef FLORA_X86
    if (cpu_has_avx2_fma()) {
      g_kernel = micro_avx2;
      g_isa = "avx2-fma";
    }
    if (cpu_has_avx512()) {
      g_kernel = micro_avx512;
      g_isa = "avx512";
    }
#endif
    unsigned hc = std::thread::hardware_concurrency();
    g_pool.resize(hc == 0 ? 1 : (int)hc);
  });
  napi_property_descriptor props[] = {
      {"gemm", nullptr, Gemm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setIsa", nullptr, SetIsa, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rmsNorm", nullptr, RmsNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rmsNormGrad", nullptr, RmsNormGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rope", nullptr, Rope, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"crossEntropy", nullptr, CrossEntropy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attention", nullptr, Attention, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attentionGrad", nullptr, AttentionGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"swiglu", nullptr, Swiglu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"swigluGrad", nullptr, SwigluGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, Binary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"transpose0213", nullptr, Transpose0213, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"frozenCreate", nullptr, FrozenCreate, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"frozenFree", nullptr, FrozenFree, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"frozenMatMul", nullptr, FrozenMatMul, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"frozenRead", nullptr, FrozenRead, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
