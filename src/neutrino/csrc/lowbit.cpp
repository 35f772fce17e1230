// Weight-only low-bit linears for CPU (`neutrino_quant::lowbit_linear`, `lowbit_dequant`; T is float32,
// bfloat16 or float16; accumulation is float32):
// - lowbit_linear(x[M,K] T, bits, qb, scales, offsets?, group_size, exact=False) -> y[M,N] T: y = x @ W^T
//   with W[n,k] = q[n,k] * s[n,g] + o[n,g], g = k // group_size, for 8-bit (int8) or 4-bit (uint8
//   nibbles) codes and scales/offsets (float32, bfloat16 or float16) in the 16-row blocked layout below.
//   The kernel of every int8/int4/3-bit format (per-channel or group-wise, symmetric, asymmetric,
//   GGUF's d * q + m) for small batches (decode). With group_size % 16 == 0, unless `exact`: the
//   integer path (x quantized to int8 per token and 32- or 16-column block; computes x^ @ W^T, see the
//   integer path's comment): vpdpbusd with AVX512-VNNI + VBMI, else vpmaddubsw + vpmaddwd on AVX2
//   (lowbit_avx2.cpp). Otherwise fp32 FMAs on the integer codes, exact up to summation order
//   (AVX-512, AVX2 + FMA, or portable C++).
// - lowbit_dequant(bits, qb, scales, offsets?, group_size, dtype, n0, n1) -> W^T[K, n1-n0] T: rows
//   [n0, n1) of the same W, for large batches (dequantize, then the dtype's GEMM).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"
#include "lowbit.h"
#include "lowbit_int.h"
#include "vec.h"

namespace {

using namespace neutrino::vec;
using namespace neutrino::lowbit;

// ---- int8 / int4 group-wise linear, blocked layout ----------------------------------------------
// Codes are stored per block of 16 output rows, column-major within the block: int8 qb[N / 16, K, 16]
// (qb[b, k, i] = q[16 b + i, k]); int4 qb[N / 16, K / 2, 16] (byte [b, j, i] holds row 16 b + i,
// columns 2j (low nibble) and 2j + 1 (high nibble), i.e. a checkpoint's packed qweight, blocked).
// Scales and offsets are [N / 16, G, 16]; W[n, k] = q[n, k] * s[n, g] + o[n, g]. One 16-byte load gives
// one (int8) or two (int4) columns of 16 rows, so the kernel vectorises over output rows (x[m, k] is
// broadcast), needs no horizontal reductions, and reads each block as one stream. Per group it sums
// q * x, then scales: y += s * sum(q x) + o * sum(x).
struct LBArgs {
  const float* x; int64_t K;        // x [M, K] float, contiguous
  const float* xg;                  // [M, G] group sums of x (only with offsets)
  const uint8_t* q;                 // blocked codes
  const void* s; const void* o;     // [N / 16, G, 16] in the scale type SC; o may be null
  int64_t G, gs, N;
  float* y;                         // [M, N] float
};

template <int BITS> constexpr int64_t block_bytes(int64_t K) { return BITS == 8 ? 16 * K : 8 * K; }

// Bytes from the start of a block to column k (k even).
template <int BITS> constexpr int64_t col_bytes(int64_t k) { return BITS == 8 ? k * 16 : (k / 2) * 16; }
// Column pairs per 64-byte cache line of a block's stream.
template <int BITS> constexpr int64_t pairs_per_line() { return BITS == 8 ? 2 : 4; }

#if NEUTRINO_HAVE_AVX512
constexpr int64_t kPrefetch = 1024;  // bytes ahead in each block's code stream
constexpr int64_t kScalePrefetch = 64;  // scales ahead (4 groups of 16 rows) in the scale/offset streams

// Columns k and k + 1 (k even) of the 16 rows of a block, as floats.
template <int BITS>
inline void load_cols(const uint8_t* blk, int64_t k, __m512& w0, __m512& w1) {
  if (BITS == 8) {
    const uint8_t* p = blk + k * 16;
    w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  } else {
    const uint8_t* p = blk + (k / 2) * 16;
    const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    w0 = _mm512_permutexvar_ps(d, lut);  // vpermps reads the low 4 bits of each index: the low nibble
    w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), lut);
  }
}

// tot += s[g] * sum (+ o[g] * sum(x of group g) with offsets) for NB row blocks x MB tokens of group g.
template <typename SC, int NB, int MB, bool OFF, typename Args>  // Args: LBArgs or VNArgs
inline void add_group(const Args& a, int64_t b0, int64_t g, int64_t m0, const __m512 (&sum)[NB][MB],
                      __m512 (&tot)[NB][MB]) {
  for (int i = 0; i < NB; ++i) {
    const SC* sp = static_cast<const SC*>(a.s) + ((b0 + i) * a.G + g) * 16;
    _mm_prefetch(reinterpret_cast<const char*>(sp + kScalePrefetch), _MM_HINT_T0);
    const __m512 sv = load16(sp);
    __m512 ov = _mm512_setzero_ps();
    if (OFF) {
      const SC* op = static_cast<const SC*>(a.o) + ((b0 + i) * a.G + g) * 16;
      _mm_prefetch(reinterpret_cast<const char*>(op + kScalePrefetch), _MM_HINT_T0);
      ov = load16(op);
    }
    for (int j = 0; j < MB; ++j) {
      tot[i][j] = _mm512_fmadd_ps(sum[i][j], sv, tot[i][j]);
      if (OFF) tot[i][j] = _mm512_fmadd_ps(_mm512_set1_ps(a.xg[(m0 + j) * a.G + g]), ov, tot[i][j]);
    }
  }
}

// NB row blocks (16 rows each) x MB tokens; two accumulator sets (even/odd k) for independent FMA chains.
template <int BITS, typename SC, int NB, int MB, bool OFF>
inline void lb_tile(const LBArgs& a, int64_t b0, int64_t m0) {
  __m512 tot[NB][MB];
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < MB; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m512 acc[2][NB][MB];
    for (int p = 0; p < 2; ++p)
      for (int i = 0; i < NB; ++i)
        for (int j = 0; j < MB; ++j) acc[p][i][j] = _mm512_setzero_ps();
    const int64_t kend = (g + 1) * a.gs;
    for (int64_t k = g * a.gs; k < kend; k += 2) {
      const bool line_start = (k / 2) % pairs_per_line<BITS>() == 0;  // one prefetch per cache line
      for (int i = 0; i < NB; ++i) {
        const uint8_t* blk = a.q + (b0 + i) * block_bytes<BITS>(a.K);
        if (line_start) _mm_prefetch(reinterpret_cast<const char*>(blk + col_bytes<BITS>(k) + kPrefetch), _MM_HINT_T0);
        __m512 w0, w1;
        load_cols<BITS>(blk, k, w0, w1);
        for (int j = 0; j < MB; ++j) {
          acc[0][i][j] = _mm512_fmadd_ps(w0, _mm512_set1_ps(a.x[(m0 + j) * a.K + k]), acc[0][i][j]);
          acc[1][i][j] = _mm512_fmadd_ps(w1, _mm512_set1_ps(a.x[(m0 + j) * a.K + k + 1]), acc[1][i][j]);
        }
      }
    }
    __m512 sum[NB][MB];
    for (int i = 0; i < NB; ++i)
      for (int j = 0; j < MB; ++j) sum[i][j] = _mm512_add_ps(acc[0][i][j], acc[1][i][j]);
    add_group<SC, NB, MB, OFF>(a, b0, g, m0, sum, tot);
  }
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < MB; ++j) _mm512_storeu_ps(a.y + (m0 + j) * a.N + (b0 + i) * 16, tot[i][j]);
}

#endif

#if NEUTRINO_HAVE_VNNI
// ---- integer path: int8 activations x codes with vpdpbusd (u8 x s8 -> int32, 4 products per lane) ----
// x is quantized per token and per block of B columns (B | group_size, B % 16 == 0): xq = round(x / xs),
// xs = max|x| / 127. A 64-byte load of a block's stream is [4 byte-columns][16 rows]; vpermb transposes it
// to [16 rows][4 bytes] so that each 32-bit lane is one output row and vpdpbusd sums 4 of its columns.
// int4: the 4 bytes hold columns 0..7 of an 8-column chunk, low nibbles the even columns and high nibbles
// the odd ones, so the activations of each chunk are stored evens first ([x0 x2 x4 x6 x1 x3 x5 x7]).
// int8: codes are signed, so they go to the unsigned side as q ^ 0x80 = q + 128 and each block's int32
// accumulator starts at -128 * sum(xq) (per token: no extra weight memory).
// Per block y += xs * isum; per group y = s * that + o * sum(x^) (x^ = xq * xs, so y = x^ @ W^T exactly:
// with the float sum(x) instead, the rounding of x would not cancel against o = -z s for zero-centred
// weights: 3x the error in an emulation with RTN int4 g64 weights).

// x [M, K] float -> VNArgs activations (xq, xs, xc, xg) with blocks of B columns.
inline void quantize_blocks(const float* xf, int64_t M, int64_t K, int64_t B, int64_t gs, bool int4,
                            int8_t* xq, float* xs, int32_t* xc, float* xg) {
  const int64_t KB = K / B, G = K / gs;
  const __m128i evens_first = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t kb = 0; kb < KB; ++kb) {
      const float* xr = xf + m * K + kb * B;
      __m512 amax = _mm512_setzero_ps();
      for (int64_t k = 0; k < B; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
      const float mx = _mm512_reduce_max_ps(amax);
      const float scale = mx > 0.f ? mx / 127.f : 1.f;
      const __m512 inv = _mm512_set1_ps(mx > 0.f ? 127.f / mx : 1.f);
      __m512i isum = _mm512_setzero_si512();
      for (int64_t k = 0; k < B; k += 16) {
        const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + k), inv));  // nearest even
        isum = _mm512_add_epi32(isum, v);
        __m128i b = _mm512_cvtsepi32_epi8(v);
        if (int4) b = _mm_shuffle_epi8(b, evens_first);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + m * K + kb * B + k), b);
      }
      const int32_t sum = _mm512_reduce_add_epi32(isum);
      xs[m * KB + kb] = scale;
      xc[m * KB + kb] = -128 * sum;
      if (xg) {
        if (kb * B % gs == 0) xg[m * G + kb * B / gs] = 0.f;
        xg[m * G + kb * B / gs] += scale * static_cast<float>(sum);
      }
    }
}

// Transposes [4][16] bytes to [16][4]: output byte 4 i + j = input byte 16 j + i.
inline __m512i transpose_idx() {
  alignas(64) uint8_t idx[64];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 4; ++j) idx[4 * i + j] = static_cast<uint8_t>(16 * j + i);
  return _mm512_load_si512(idx);
}

constexpr int64_t kVnPrefetch = 8192;  // bytes ahead in the code stream (measured: 1 KiB reaches ~60 % of it)

// NB row blocks x MB tokens; 2 U int32 accumulator sets (independent vpdpbusd chains), U 8-column chunks per step.
template <int BITS, typename SC, int NB, int MB, bool OFF, int U>
inline void vn_tile(const VNArgs& a, int64_t b0, int64_t m0, __m512i perm, int64_t pf) {
  const __m512i nib = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int64_t KB = a.K / a.B, bpg = a.gs / a.B;
  __m512 tot[NB][MB];
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < MB; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m512 facc[NB][MB];
    for (int i = 0; i < NB; ++i)
      for (int j = 0; j < MB; ++j) facc[i][j] = _mm512_setzero_ps();
    for (int64_t kb = g * bpg; kb < (g + 1) * bpg; ++kb) {
      __m512i acc[2 * U][NB][MB];
      for (int u = 0; u < 2 * U; ++u)
        for (int i = 0; i < NB; ++i)
          for (int j = 0; j < MB; ++j)
            acc[u][i][j] = BITS == 8 && u == 0 ? _mm512_set1_epi32(a.xc[(m0 + j) * KB + kb]) : _mm512_setzero_si512();
      const int64_t kend = (kb + 1) * a.B;
      for (int64_t k = kb * a.B; k < kend; k += 8 * U) {  // 8 columns: one 64-byte line (int4), two (int8)
        for (int u = 0; u < U; ++u)
          for (int i = 0; i < NB; ++i) {
            const uint8_t* p = a.q + (b0 + i) * block_bytes<BITS>(a.K) + col_bytes<BITS>(k + 8 * u);
            _mm_prefetch(reinterpret_cast<const char*>(p + pf), _MM_HINT_T0);
            __m512i w0, w1;
            if (BITS == 8) {
              _mm_prefetch(reinterpret_cast<const char*>(p + 64 + pf), _MM_HINT_T0);
              w0 = _mm512_xor_si512(_mm512_permutexvar_epi8(perm, _mm512_loadu_si512(p)), flip);
              w1 = _mm512_xor_si512(_mm512_permutexvar_epi8(perm, _mm512_loadu_si512(p + 64)), flip);
            } else {
              const __m512i d = _mm512_permutexvar_epi8(perm, _mm512_loadu_si512(p));
              w0 = _mm512_and_si512(d, nib);
              w1 = _mm512_and_si512(_mm512_srli_epi16(d, 4), nib);
            }
            for (int j = 0; j < MB; ++j) {
              const int8_t* xp = a.xq + (m0 + j) * a.K + k + 8 * u;
              acc[2 * u][i][j] = _mm512_dpbusd_epi32(acc[2 * u][i][j], w0, _mm512_set1_epi32(load_i32(xp)));
              acc[2 * u + 1][i][j] = _mm512_dpbusd_epi32(acc[2 * u + 1][i][j], w1, _mm512_set1_epi32(load_i32(xp + 4)));
            }
          }
      }
      for (int j = 0; j < MB; ++j) {
        const __m512 xsv = _mm512_set1_ps(a.xs[(m0 + j) * KB + kb]);
        for (int i = 0; i < NB; ++i) {
          __m512i isum = _mm512_add_epi32(acc[0][i][j], acc[1][i][j]);
          for (int u = 1; u < U; ++u) isum = _mm512_add_epi32(isum, _mm512_add_epi32(acc[2 * u][i][j], acc[2 * u + 1][i][j]));
          facc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), xsv, facc[i][j]);
        }
      }
    }
    add_group<SC, NB, MB, OFF>(a, b0, g, m0, facc, tot);
  }
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < MB; ++j) _mm512_storeu_ps(a.y + (m0 + j) * a.N + (b0 + i) * 16, tot[i][j]);
}

// One row block at a time, all token tiles of a block before the next block: the codes are read from
// memory once, as one sequential stream prefetched far ahead (interleaving several blocks' streams, as
// lb_run does, measured 2-4x slower on cold weights; decode is memory-bound), and the later token tiles
// find the block's codes in L1/L2.
template <int BITS, typename SC, bool OFF>
void vn_run(const VNArgs& a, int64_t b0, int64_t b1, int64_t M) {
  const __m512i perm = transpose_idx();
  for (int64_t b = b0; b < b1; ++b) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) vn_tile<BITS, SC, 1, 4, OFF, 1>(a, b, m, perm, kVnPrefetch);
    if (m + 2 <= M) { vn_tile<BITS, SC, 1, 2, OFF, 2>(a, b, m, perm, kVnPrefetch); m += 2; }
    if (m < M) vn_tile<BITS, SC, 1, 1, OFF, 2>(a, b, m, perm, kVnPrefetch);
  }
}

#endif

#if NEUTRINO_HAVE_AVX2 && !NEUTRINO_HAVE_AVX512
// The fp32 tiles with 8-lane vectors (AVX2 + FMA): each 16-row block is two halves of 8 rows.
constexpr int64_t kPrefetch2 = 1024;  // bytes ahead in each block's code stream

template <int BITS>
inline void load_cols2(const uint8_t* blk, int64_t k, __m256 (&w0)[2], __m256 (&w1)[2]) {
  if (BITS == 8) {
    const uint8_t* p = blk + k * 16;
    const __m128i c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    w0[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c0));
    w0[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c0, 8)));
    w1[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c1));
    w1[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c1, 8)));
  } else {
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (k / 2) * 16));
    const __m256i lo = _mm256_cvtepu8_epi32(c), hi = _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8));
    const __m256i nib = _mm256_set1_epi32(15);
    w0[0] = _mm256_cvtepi32_ps(_mm256_and_si256(lo, nib));
    w0[1] = _mm256_cvtepi32_ps(_mm256_and_si256(hi, nib));
    w1[0] = _mm256_cvtepi32_ps(_mm256_srli_epi32(lo, 4));  // bytes: the shift leaves the high nibble
    w1[1] = _mm256_cvtepi32_ps(_mm256_srli_epi32(hi, 4));
  }
}

template <int BITS, typename SC, int NB, int MB, bool OFF>
inline void lb_tile(const LBArgs& a, int64_t b0, int64_t m0) {
  __m256 tot[NB][2][MB];
  for (int i = 0; i < NB; ++i)
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < MB; ++j) tot[i][h][j] = _mm256_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m256 acc[2][NB][2][MB];  // even/odd columns: independent FMA chains
    for (int p = 0; p < 2; ++p)
      for (int i = 0; i < NB; ++i)
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < MB; ++j) acc[p][i][h][j] = _mm256_setzero_ps();
    const int64_t kend = (g + 1) * a.gs;
    for (int64_t k = g * a.gs; k < kend; k += 2) {
      const bool line_start = (k / 2) % pairs_per_line<BITS>() == 0;
      for (int i = 0; i < NB; ++i) {
        const uint8_t* blk = a.q + (b0 + i) * block_bytes<BITS>(a.K);
        if (line_start) _mm_prefetch(reinterpret_cast<const char*>(blk + col_bytes<BITS>(k) + kPrefetch2), _MM_HINT_T0);
        __m256 w0[2], w1[2];
        load_cols2<BITS>(blk, k, w0, w1);
        for (int j = 0; j < MB; ++j) {
          const __m256 x0 = _mm256_set1_ps(a.x[(m0 + j) * a.K + k]);
          const __m256 x1 = _mm256_set1_ps(a.x[(m0 + j) * a.K + k + 1]);
          for (int h = 0; h < 2; ++h) {
            acc[0][i][h][j] = _mm256_fmadd_ps(w0[h], x0, acc[0][i][h][j]);
            acc[1][i][h][j] = _mm256_fmadd_ps(w1[h], x1, acc[1][i][h][j]);
          }
        }
      }
    }
    for (int i = 0; i < NB; ++i) {
      const SC* sp = static_cast<const SC*>(a.s) + ((b0 + i) * a.G + g) * 16;
      const SC* op = OFF ? static_cast<const SC*>(a.o) + ((b0 + i) * a.G + g) * 16 : nullptr;
      for (int h = 0; h < 2; ++h) {
        const __m256 sv = load8(sp + 8 * h);
        const __m256 ov = OFF ? load8(op + 8 * h) : _mm256_setzero_ps();
        for (int j = 0; j < MB; ++j) {
          const __m256 sum = _mm256_add_ps(acc[0][i][h][j], acc[1][i][h][j]);
          tot[i][h][j] = _mm256_fmadd_ps(sum, sv, tot[i][h][j]);
          if (OFF) tot[i][h][j] = _mm256_fmadd_ps(_mm256_set1_ps(a.xg[(m0 + j) * a.G + g]), ov, tot[i][h][j]);
        }
      }
    }
  }
  for (int i = 0; i < NB; ++i)
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < MB; ++j) _mm256_storeu_ps(a.y + (m0 + j) * a.N + (b0 + i) * 16 + 8 * h, tot[i][h][j]);
}

#endif

#if NEUTRINO_HAVE_AVX512 || NEUTRINO_HAVE_AVX2
// Row blocks [b0, b1) for tokens [m0, m0 + MB), NB blocks per tile (the ISA's lb_tile).
template <int BITS, typename SC, int NB, int MB, bool OFF>
inline void lb_blocks(const LBArgs& a, int64_t b0, int64_t b1, int64_t m0) {
  int64_t b = b0;
  for (; b + NB <= b1; b += NB) lb_tile<BITS, SC, NB, MB, OFF>(a, b, m0);
  for (; b < b1; ++b) lb_tile<BITS, SC, 1, MB, OFF>(a, b, m0);
}

// Tiles by token count: as many tokens per tile as the ISA's registers hold accumulators for.
template <int BITS, typename SC, bool OFF>
void lb_run(const LBArgs& a, int64_t b0, int64_t b1, int64_t M) {
  int64_t m = 0;
#if NEUTRINO_HAVE_AVX512
  for (; m + 4 <= M; m += 4) lb_blocks<BITS, SC, 1, 4, OFF>(a, b0, b1, m);
  if (m + 2 <= M) { lb_blocks<BITS, SC, 2, 2, OFF>(a, b0, b1, m); m += 2; }
  if (m < M) lb_blocks<BITS, SC, 8, 1, OFF>(a, b0, b1, m);
#else
  for (; m + 2 <= M; m += 2) lb_blocks<BITS, SC, 1, 2, OFF>(a, b0, b1, m);
  if (m < M) lb_blocks<BITS, SC, 2, 1, OFF>(a, b0, b1, m);
#endif
}
#endif

// Code of row i of block b at column k.
template <int BITS>
inline float code_at(const uint8_t* q, int64_t K, int64_t b, int64_t k, int64_t i) {
  if (BITS == 8) return static_cast<float>(reinterpret_cast<const int8_t*>(q)[(b * K + k) * 16 + i]);
  const uint8_t byte = q[b * 8 * K + (k / 2) * 16 + i];
  return static_cast<float>((k & 1) ? (byte >> 4) : (byte & 15));
}

template <int BITS, typename SC>
void lb_run_generic(const LBArgs& a, int64_t b0, int64_t b1, int64_t M) {
  const SC* sp = static_cast<const SC*>(a.s);
  const SC* op = static_cast<const SC*>(a.o);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t i = 0; i < 16; ++i) {
        float tot = 0.f;
        for (int64_t g = 0; g < a.G; ++g) {
          float acc = 0.f;
          for (int64_t k = g * a.gs; k < (g + 1) * a.gs; ++k) acc += code_at<BITS>(a.q, a.K, b, k, i) * a.x[m * a.K + k];
          tot += acc * static_cast<float>(sp[(b * a.G + g) * 16 + i]);
          if (op) tot += a.xg[m * a.G + g] * static_cast<float>(op[(b * a.G + g) * 16 + i]);
        }
        a.y[m * a.N + b * 16 + i] = tot;
      }
}

// K from the blocked codes' shape, after checking it and the scales/offsets.
int64_t check_blocked(int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                      const c10::optional<at::Tensor>& offsets, int64_t group_size) {
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4");
  TORCH_CHECK(q.dim() == 3 && q.size(2) == 16 && q.is_contiguous() &&
              q.scalar_type() == (bits == 8 ? at::kChar : at::kByte),
              "q: contiguous [N / 16, K (int8) or K / 2 (uint8), 16]");
  const int64_t K = bits == 8 ? q.size(1) : 2 * q.size(1);
  TORCH_CHECK(group_size > 0 && group_size % 2 == 0, "group_size must be even");
  TORCH_CHECK(scales.dim() == 3 && scales.is_contiguous() && scales.size(0) == q.size(0) && scales.size(2) == 16 &&
              scales.size(1) * group_size == K, "scales: contiguous [N / 16, K / group_size, 16]");
  if (offsets.has_value())
    TORCH_CHECK(offsets->sizes() == scales.sizes() && offsets->scalar_type() == scales.scalar_type() &&
                offsets->is_contiguous(), "offsets: like scales");
  return K;
}

// x [M, K] (row stride x_s0) of type T -> float32 rows, and per-group sums when `xg` is non-null.
template <typename T>
void load_x(const T* xp, int64_t x_s0, int64_t M, int64_t K, int64_t gs, float* xf, float* xg) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xf[m * K + k] = static_cast<float>(xp[m * x_s0 + k]);
  if (xg)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t g = 0; g < K / gs; ++g) {
        float sum = 0.f;
        for (int64_t k = g * gs; k < (g + 1) * gs; ++k) sum += xf[m * K + k];
        xg[m * (K / gs) + g] = sum;
      }
}

}  // namespace

namespace neutrino {

// One ATen allocation per call (the output): x is converted (and quantized) into local buffers, and each
// task converts its own output rows, so a batch-1 call costs little beyond the kernel itself.
// `exact`: the fp32-FMA path (y = x @ W^T up to summation order) instead of the integer one (int8
// activations); the fp32 path also serves CPUs without VNNI/VBMI and groups that are not a multiple of 16.
LowbitCall::LowbitCall(const at::Tensor& x, int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                       const c10::optional<at::Tensor>& offsets, int64_t group_size, bool exact)
    : bits_(bits), K_(check_blocked(bits, q, scales, offsets, group_size)), gs_(group_size),
      off_(offsets.has_value()), xtype_(x.scalar_type()), stype_(scales.scalar_type()), q_(q.data_ptr()),
      s_(scales.data_ptr()), o_(off_ ? offsets->data_ptr() : nullptr) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K_ && x.stride(1) == 1, "x: [M, K] with unit column stride");
  M_ = x.size(0), G_ = scales.size(1), nblk_ = q.size(0);
#if NEUTRINO_HAVE_VNNI || NEUTRINO_HAVE_AVX2
  B_ = exact ? 0 : act_block(group_size);
#else
  B_ = 0;
#endif
  const bool integer = B_ > 0;
  xf_.resize(M_ * K_);
  xg_.resize(off_ ? M_ * G_ : 0);
  dispatch_float(xtype_, "lowbit_linear x", [&](auto tag) {
    using T = decltype(tag);
    load_x<T>(x.data_ptr<T>(), x.stride(0), M_, K_, gs_, xf_.data(), off_ && !integer ? xg_.data() : nullptr);
  });
  if (integer) {
    xq_.resize(M_ * K_);
    xs_.resize(M_ * K_ / B_);
#if NEUTRINO_HAVE_VNNI
    xc_.resize(M_ * K_ / B_);
    quantize_blocks(xf_.data(), M_, K_, B_, gs_, bits == 4, xq_.data(), xs_.data(), xc_.data(),
                    off_ ? xg_.data() : nullptr);
#else
    avx2_quantize(xf_.data(), M_, K_, B_, gs_, bits == 4, xq_.data(), xs_.data(), off_ ? xg_.data() : nullptr);
#endif
  }
  if (xtype_ != at::kFloat) yf_.resize(M_ * nblk_ * 16);
}

int64_t LowbitCall::grain() const { return std::max<int64_t>(4, 65536 / (16 * K_)); }

void LowbitCall::rows(const at::Tensor& y, int64_t b0, int64_t b1) const {
  const int64_t N = nblk_ * 16, M = M_;
  TORCH_CHECK(y.scalar_type() == xtype_ && y.is_contiguous() && y.dim() == 2 && y.size(0) == M && y.size(1) == N,
              "lowbit rows: y must be a contiguous [", M, ", ", N, "] of x's dtype");
  const bool direct = xtype_ == at::kFloat, off = off_;
  float* yout = direct ? y.data_ptr<float>() : yf_.data();
  const float* xg = off ? xg_.data() : nullptr;
  LBArgs a{xf_.data(), K_, xg, static_cast<const uint8_t*>(q_), s_, o_, G_, gs_, N, yout};
  VNArgs v{xq_.data(), xs_.data(), xc_.data(), xg, a.q, a.s, a.o, K_, B_, G_, gs_, N, yout};
  const int scale_type = stype_ == at::kFloat ? 0 : stype_ == at::kBFloat16 ? 1 : 2;
  const int64_t bits = bits_;
  const bool integer = B_ > 0;
  dispatch_float(stype_, "lowbit_linear scales", [&](auto tag) {
    using SC = decltype(tag);
#if NEUTRINO_HAVE_VNNI
    if (integer) {
      if (bits == 8) { if (off) vn_run<8, SC, true>(v, b0, b1, M); else vn_run<8, SC, false>(v, b0, b1, M); }
      else { if (off) vn_run<4, SC, true>(v, b0, b1, M); else vn_run<4, SC, false>(v, b0, b1, M); }
    } else
#else
    if (integer) avx2_integer_blocks(v, static_cast<int>(bits), scale_type, b0, b1, M); else
#endif
    {
#if NEUTRINO_HAVE_AVX512 || NEUTRINO_HAVE_AVX2
      if (bits == 8) { if (off) lb_run<8, SC, true>(a, b0, b1, M); else lb_run<8, SC, false>(a, b0, b1, M); }
      else { if (off) lb_run<4, SC, true>(a, b0, b1, M); else lb_run<4, SC, false>(a, b0, b1, M); }
#else
      if (bits == 8) lb_run_generic<8, SC>(a, b0, b1, M); else lb_run_generic<4, SC>(a, b0, b1, M);
#endif
    }
  });
  (void)scale_type;
  if (!direct)
    dispatch_float(xtype_, "lowbit_linear y", [&](auto tag) {
      using T = decltype(tag);
      T* yp = y.data_ptr<T>();
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = b0 * 16; n < b1 * 16; ++n) yp[m * N + n] = static_cast<T>(yf_[m * N + n]);
    });
}

at::Tensor lowbit_linear(const at::Tensor& x, int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                         const c10::optional<at::Tensor>& offsets, int64_t group_size, bool exact) {
  const LowbitCall call(x, bits, q, scales, offsets, group_size, exact);
  at::Tensor y = at::empty({x.size(0), call.blocks() * 16}, x.options());
  at::parallel_for(0, call.blocks(), call.grain(), [&](int64_t b0, int64_t b1) { call.rows(y, b0, b1); });
  return y;
}

}  // namespace neutrino

namespace {

template <int BITS, typename SC, typename T>
void dequant_tiles(const LBArgs& a, int64_t B0, int64_t NB, int64_t W, T* outp, int64_t t0, int64_t t1) {
  const SC* sp = static_cast<const SC*>(a.s);
  const SC* op = static_cast<const SC*>(a.o);
  for (int64_t kt = 0; kt < a.K; kt += 32)
    for (int64_t bt = t0 * 16; bt < std::min(NB, t1 * 16); bt += 16)
      for (int64_t k = kt; k < std::min(a.K, kt + 32); k += 2) {
        const int64_t g = k / a.gs;
        for (int64_t bl = bt; bl < std::min(NB, bt + 16); ++bl) {
          const int64_t b = B0 + bl, si = (b * a.G + g) * 16;
          T* dst = outp + k * W + bl * 16;
#if NEUTRINO_HAVE_AVX512
          __m512 w0, w1;
          load_cols<BITS>(a.q + b * block_bytes<BITS>(a.K), k, w0, w1);
          const __m512 sv = load16(sp + si);
          const __m512 ov = op ? load16(op + si) : _mm512_setzero_ps();
          store16(dst, _mm512_fmadd_ps(w0, sv, ov));
          store16(dst + W, _mm512_fmadd_ps(w1, sv, ov));
#elif NEUTRINO_HAVE_AVX2
          __m256 w0[2], w1[2];
          load_cols2<BITS>(a.q + b * block_bytes<BITS>(a.K), k, w0, w1);
          for (int h = 0; h < 2; ++h) {
            const __m256 sv = load8(sp + si + 8 * h);
            const __m256 ov = op ? load8(op + si + 8 * h) : _mm256_setzero_ps();
            store8(dst + 8 * h, _mm256_fmadd_ps(w0[h], sv, ov));
            store8(dst + W + 8 * h, _mm256_fmadd_ps(w1[h], sv, ov));
          }
#else
          for (int64_t i = 0; i < 16; ++i)
            for (int64_t c = 0; c < 2; ++c)
              dst[c * W + i] = static_cast<T>(code_at<BITS>(a.q, a.K, b, k + c, i) * static_cast<float>(sp[si + i]) +
                                              (op ? static_cast<float>(op[si + i]) : 0.f));
#endif
        }
      }
}

}  // namespace

namespace neutrino {

at::Tensor lowbit_dequant(int64_t bits, const at::Tensor& q, const at::Tensor& scales,
                          const c10::optional<at::Tensor>& offsets, int64_t group_size, at::ScalarType dtype,
                          int64_t n0, int64_t n1) {
  const int64_t K = check_blocked(bits, q, scales, offsets, group_size), N = q.size(0) * 16;
  TORCH_CHECK(0 <= n0 && n0 < n1 && n1 <= N && n0 % 16 == 0 && n1 % 16 == 0, "rows [n0, n1): multiples of 16");
  const int64_t B0 = n0 / 16, NB = (n1 - n0) / 16, W = n1 - n0;
  at::Tensor out = at::empty({K, W}, q.options().dtype(dtype));
  LBArgs a{nullptr, K, nullptr, static_cast<const uint8_t*>(q.data_ptr()), scales.data_ptr(),
           offsets.has_value() ? offsets->data_ptr() : nullptr, scales.size(1), group_size, N, nullptr};
  dispatch_float(dtype, "lowbit_dequant", [&](auto tag) {
    using T = decltype(tag);
    dispatch_float(scales.scalar_type(), "lowbit_dequant scales", [&](auto stag) {
      using SC = decltype(stag);
      T* outp = out.data_ptr<T>();
      at::parallel_for(0, (NB + 15) / 16, 1, [&](int64_t t0, int64_t t1) {
        if (bits == 8) dequant_tiles<8, SC, T>(a, B0, NB, W, outp, t0, t1);
        else dequant_tiles<4, SC, T>(a, B0, NB, W, outp, t0, t1);
      });
    });
  });
  return out;
}

// The code paths of lowbit_linear: "avx512-vnni" (integer path with vpdpbusd, AVX-512 fp32 tiles),
// "avx512+avx2-int8" (integer path with AVX2 vpmaddubsw, AVX-512 fp32 tiles), "avx2-int8" (both AVX2),
// "generic" (scalar fp32 code, no integer path).
std::string quant_isa() {
  return NEUTRINO_HAVE_VNNI ? "avx512-vnni" : NEUTRINO_HAVE_AVX512 ? "avx512+avx2-int8"
         : NEUTRINO_HAVE_AVX2 ? "avx2-int8" : "generic";
}

}  // namespace neutrino
