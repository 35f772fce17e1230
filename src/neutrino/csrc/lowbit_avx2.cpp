// The integer path of the low-bit linears with AVX2 (see lowbit_int.h): vpmaddubsw (u8 x s8 -> s16 pairs)
// and vpmaddwd, as llama.cpp's Q4 x Q8 dot products, on the 16-row blocked codes of lowbit.cpp.
// A 64-byte line of a block's stream is [4 byte-columns][16 rows]; two unpacks, a lane swap and two more
// unpacks transpose it in registers to two vectors of 8 rows x 4 bytes (rows 0-3 and 8-11, then 4-7 and
// 12-15), so each 32-bit lane is one output row and the products of its 4 bytes sum into that lane.
// The bytes of a lane are byte-columns (0, 2, 1, 3), so activations are stored in that order per chunk:
// int8 chunks of 4 columns [0 2 1 3]; int4 chunks of 8 columns [0 4 2 6 | 1 5 3 7] (low nibbles hold
// the even columns, high nibbles the odd ones).
// int8 codes are signed: vpmaddubsw takes |q| and x with q's sign (2 * 128 * 127 fits int16); int4 codes
// are 0..15, so one block of 32 columns sums in int16 (16 * 15 * 127 < 2^15) before widening.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "lowbit_int.h"
#include "vec.h"

namespace neutrino::lowbit {

#if NEUTRINO_HAVE_AVX2 && !NEUTRINO_HAVE_VNNI

namespace {

using namespace neutrino::vec;

constexpr int64_t kPrefetchBytes = 4096;  // ahead in a block's code stream

// Two vectors of 8 rows x 4 byte-columns from the 64 bytes at p ([4][16]): rows 0-3/8-11 and 4-7/12-15.
inline void transpose_line(const uint8_t* p, __m256i& v0, __m256i& v1) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  const __m256i t0 = _mm256_unpacklo_epi8(a, b), t1 = _mm256_unpackhi_epi8(a, b);  // (c0 c2) | (c1 c3)
  const __m256i u0 = _mm256_permute2x128_si256(t0, t1, 0x20), u1 = _mm256_permute2x128_si256(t0, t1, 0x31);
  v0 = _mm256_unpacklo_epi16(u0, u1);
  v1 = _mm256_unpackhi_epi16(u0, u1);
}

// 16 per-row values (scales, offsets) in the order of the two row vectors.
template <typename SC>
inline void load_rows(const SC* p, __m256& r0, __m256& r1) {
  const __m256 lo = load8(p), hi = load8(p + 8);
  r0 = _mm256_permute2f128_ps(lo, hi, 0x20);
  r1 = _mm256_permute2f128_ps(lo, hi, 0x31);
}

// One 16-row block x MB tokens.
template <int BITS, typename SC, int MB, bool OFF>
void tile(const VNArgs& a, int64_t b, int64_t m0) {
  const uint8_t* blk = a.q + b * (BITS == 8 ? 16 * a.K : 8 * a.K);
  const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const int64_t KB = a.K / a.B, bpg = a.gs / a.B, step = BITS == 8 ? 4 : 8;  // columns per 64-byte line
  __m256 tot[2][MB];
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < MB; ++j) tot[h][j] = _mm256_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m256 facc[2][MB];
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < MB; ++j) facc[h][j] = _mm256_setzero_ps();
    for (int64_t kb = g * bpg; kb < (g + 1) * bpg; ++kb) {
      __m256i acc[2][MB];  // int32 (int8 codes) or int16 (int4 codes) per row
      for (int h = 0; h < 2; ++h)
        for (int j = 0; j < MB; ++j) acc[h][j] = _mm256_setzero_si256();
      for (int64_t k = kb * a.B; k < (kb + 1) * a.B; k += step) {
        const uint8_t* p = blk + (BITS == 8 ? k * 16 : (k / 2) * 16);
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
        __m256i v[2];
        transpose_line(p, v[0], v[1]);
        for (int h = 0; h < 2; ++h) {
          if (BITS == 8) {
            const __m256i aw = _mm256_abs_epi8(v[h]);
            for (int j = 0; j < MB; ++j) {
              const __m256i xb = _mm256_set1_epi32(load_i32(a.xq + (m0 + j) * a.K + k));
              const __m256i prod = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xb, v[h]));
              acc[h][j] = _mm256_add_epi32(acc[h][j], _mm256_madd_epi16(prod, ones));
            }
          } else {
            const __m256i lo = _mm256_and_si256(v[h], nib), hi = _mm256_and_si256(_mm256_srli_epi16(v[h], 4), nib);
            for (int j = 0; j < MB; ++j) {
              const int8_t* xp = a.xq + (m0 + j) * a.K + k;
              const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(xp))),
                                                 _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(xp + 4))));
              acc[h][j] = _mm256_add_epi16(acc[h][j], s);
            }
          }
        }
      }
      for (int j = 0; j < MB; ++j) {
        const __m256 xsv = _mm256_set1_ps(a.xs[(m0 + j) * KB + kb]);
        for (int h = 0; h < 2; ++h) {
          const __m256i isum = BITS == 8 ? acc[h][j] : _mm256_madd_epi16(acc[h][j], ones);
          facc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), xsv, facc[h][j]);
        }
      }
    }
    __m256 sv[2], ov[2];
    load_rows(static_cast<const SC*>(a.s) + (b * a.G + g) * 16, sv[0], sv[1]);
    if (OFF) load_rows(static_cast<const SC*>(a.o) + (b * a.G + g) * 16, ov[0], ov[1]);
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < MB; ++j) {
        tot[h][j] = _mm256_fmadd_ps(facc[h][j], sv[h], tot[h][j]);
        if (OFF) tot[h][j] = _mm256_fmadd_ps(_mm256_set1_ps(a.xg[(m0 + j) * a.G + g]), ov[h], tot[h][j]);
      }
  }
  for (int j = 0; j < MB; ++j) {
    float* yp = a.y + (m0 + j) * a.N + b * 16;
    _mm256_storeu_ps(yp, _mm256_permute2f128_ps(tot[0][j], tot[1][j], 0x20));
    _mm256_storeu_ps(yp + 8, _mm256_permute2f128_ps(tot[0][j], tot[1][j], 0x31));
  }
}

// One row block at a time, all token tiles of a block before the next: the codes stream from memory once.
template <int BITS, typename SC, bool OFF>
void run(const VNArgs& a, int64_t b0, int64_t b1, int64_t M) {
  for (int64_t b = b0; b < b1; ++b) {
    int64_t m = 0;
    for (; m + 2 <= M; m += 2) tile<BITS, SC, 2, OFF>(a, b, m);
    if (m < M) tile<BITS, SC, 1, OFF>(a, b, m);
  }
}

template <typename SC>
void run_bits(const VNArgs& a, int bits, int64_t b0, int64_t b1, int64_t M) {
  const bool off = a.o != nullptr;
  if (bits == 8) { if (off) run<8, SC, true>(a, b0, b1, M); else run<8, SC, false>(a, b0, b1, M); }
  else { if (off) run<4, SC, true>(a, b0, b1, M); else run<4, SC, false>(a, b0, b1, M); }
}

}  // namespace

void avx2_quantize(const float* xf, int64_t M, int64_t K, int64_t B, int64_t gs, bool int4, int8_t* xq,
                   float* xs, float* xg) {
  static constexpr int kOrder8[4] = {0, 2, 1, 3}, kOrder4[8] = {0, 4, 2, 6, 1, 5, 3, 7};
  const int64_t KB = K / B, G = K / gs, chunk = int4 ? 8 : 4;
  const int* order = int4 ? kOrder4 : kOrder8;
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t kb = 0; kb < KB; ++kb) {
      const float* xr = xf + m * K + kb * B;
      __m256 amax = _mm256_setzero_ps();
      for (int64_t k = 0; k < B; k += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + k)));
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      const float mx = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
      const float scale = mx > 0.f ? mx / 127.f : 1.f;
      const __m256 inv = _mm256_set1_ps(mx > 0.f ? 127.f / mx : 1.f);
      alignas(32) int32_t v[32];
      for (int64_t k = 0; k < B; k += 8)  // nearest even, as the VNNI path
        _mm256_store_si256(reinterpret_cast<__m256i*>(v + k), _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k), inv)));
      int32_t sum = 0;
      int8_t* dst = xq + m * K + kb * B;
      for (int64_t c = 0; c < B; c += chunk)
        for (int64_t i = 0; i < chunk; ++i) {
          sum += v[c + order[i]];
          dst[c + i] = static_cast<int8_t>(v[c + order[i]]);
        }
      xs[m * KB + kb] = scale;
      if (xg) {
        if (kb * B % gs == 0) xg[m * G + kb * B / gs] = 0.f;
        xg[m * G + kb * B / gs] += scale * static_cast<float>(sum);
      }
    }
}

void avx2_integer_blocks(const VNArgs& a, int bits, int scale_type, int64_t b0, int64_t b1, int64_t M) {
  if (scale_type == 0) run_bits<float>(a, bits, b0, b1, M);
  else if (scale_type == 1) run_bits<c10::BFloat16>(a, bits, b0, b1, M);
  else run_bits<c10::Half>(a, bits, b0, b1, M);
}

#else

void avx2_quantize(const float*, int64_t, int64_t, int64_t, int64_t, bool, int8_t*, float*, float*) {
  TORCH_CHECK(false, "the AVX2 integer path is not in this build");
}
void avx2_integer_blocks(const VNArgs&, int, int, int64_t, int64_t, int64_t) {
  TORCH_CHECK(false, "the AVX2 integer path is not in this build");
}

#endif

}  // namespace neutrino::lowbit
