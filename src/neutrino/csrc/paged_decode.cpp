// Paged decode attention for CPU: one query token per sequence, K/V read straight from the paged cache
// (no gather copies), fp32 accumulation, output in q's dtype.
//
// Work unit = up to kSplitTokens tokens of one sequence, all heads (longer sequences are split into
// several units whose results are merged, flash-decoding style). Tokens go in
// chunks of <= 16 that never cross a cache block; per chunk and kv head h, each of the G = Hq / Hkv
// query heads of h computes its 16 scores, updates its online softmax (running max and sum, fp32) and
// accumulates p^T V. The chunk's K/V rows are read from memory once (later query heads hit L1), and the
// next chunk (another, random block) is software-prefetched meanwhile. Units are handed out dynamically
// over ATen's OpenMP pool (at::parallel_for, so torch.set_num_threads applies).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "paged_decode.h"
#include "vec.h"

namespace {

using namespace neutrino::vec;

constexpr int kChunk = 16;  // tokens per softmax update (one AVX-512 vector of scores)

struct Params {
  int64_t B, Hkv, G, D, bs, num_blocks, max_blocks;
  const int64_t* seq_lens;
  const void* block_tables;
  bool tables_i32;
  int64_t bt_s0;
  const void* q; int64_t q_s0, q_s1;
  void* out; int64_t o_s0, o_s1;
  const void* k; int64_t k_s0, k_s1, k_s2;
  const void* v; int64_t v_s0, v_s1, v_s2;
  float scale;
};

inline int64_t block_id(const Params& p, int64_t b, int64_t i) {
  return p.tables_i32 ? static_cast<const int32_t*>(p.block_tables)[b * p.bt_s0 + i]
                      : static_cast<const int64_t*>(p.block_tables)[b * p.bt_s0 + i];
}

// All q rows of sequence b, converted to fp32 and pre-multiplied by the softmax scale.
template <typename QT>
void load_q(const Params& p, int64_t b, float* qf) {
  const QT* q = static_cast<const QT*>(p.q);
  for (int64_t hq = 0; hq < p.Hkv * p.G; ++hq) {
    const QT* row = q + b * p.q_s0 + hq * p.q_s1;
    for (int64_t d = 0; d < p.D; ++d) qf[hq * p.D + d] = to_f(row[d]) * p.scale;
  }
}

template <typename QT>
void store_out(const Params& p, int64_t b, const float* acc, const float* l) {
  QT* out = static_cast<QT*>(p.out);
  for (int64_t hq = 0; hq < p.Hkv * p.G; ++hq) {
    QT* row = out + b * p.o_s0 + hq * p.o_s1;
    const float inv = l[hq] > 0.f ? 1.f / l[hq] : 0.f;  // empty context -> zeros
    for (int64_t d = 0; d < p.D; ++d) row[d] = static_cast<QT>(acc[hq * p.D + d] * inv);
  }
}

// The chunk of tokens from `start` (at most kChunk, never across a cache block): its length and where its
// rows begin in the K and V caches (kv head 0).
template <typename KV>
struct Chunk {
  int64_t n;
  const KV* k;
  const KV* v;
};

template <typename KV>
inline Chunk<KV> chunk_at(const Params& p, int64_t b, int64_t start, int64_t end) {
  const int64_t off = start % p.bs, bid = block_id(p, b, start / p.bs);
  return {std::min<int64_t>({kChunk, p.bs - off, end - start}),
          static_cast<const KV*>(p.k) + bid * p.k_s0 + off * p.k_s1,
          static_cast<const KV*>(p.v) + bid * p.v_s0 + off * p.v_s1};
}

// Prefetch tokens [t0, t1) (all kv heads, K and V) of the chunk starting at token `start`.
// always_inline matters: gcc deems a prefetch-only function pure and drops calls to it before inlining.
template <typename KV>
__attribute__((always_inline)) inline void prefetch_rows(const Params& p, int64_t b, int64_t start, int64_t end,
                                                         int64_t t0, int64_t t1) {
  if (start >= end) return;
  const Chunk<KV> c = chunk_at<KV>(p, b, start, end);
  t1 = std::min(t1, c.n);
  if (t0 >= t1) return;
  const char* kb = reinterpret_cast<const char*>(c.k);
  const char* vb = reinterpret_cast<const char*>(c.v);
  const int64_t row = p.D * (int64_t)sizeof(KV);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t h = 0; h < p.Hkv; ++h)
      for (int64_t byte = 0; byte < row; byte += 64) {
        __builtin_prefetch(kb + (t * p.k_s1 + h * p.k_s2) * (int64_t)sizeof(KV) + byte, 0, 3);
        __builtin_prefetch(vb + (t * p.v_s1 + h * p.v_s2) * (int64_t)sizeof(KV) + byte, 0, 3);
      }
}

// ---------------------------------------------------------------------------------------------------
// A unit: tokens [begin, end) of sequence b, all heads. State per query head hq = h * G + g:
// qf[hq*D..] (q * scale, fp32), acc[hq*D..] (unnormalised output), m[hq] (running max), l[hq] (sum).
// ---------------------------------------------------------------------------------------------------

// Portable kernel (any D, any ISA): plain loops, left to the auto-vectoriser.
template <typename KV>
void unit_generic(const Params& p, int64_t b, int64_t begin, int64_t end, const float* qf, float* acc, float* m,
                  float* l) {
  const int64_t D = p.D, G = p.G;
  float s[kChunk];
  for (int64_t start = begin, step = 0; start < end; start += step) {
    const Chunk<KV> c = chunk_at<KV>(p, b, start, end);
    const int64_t n = step = c.n;
    for (int64_t h = 0; h < p.Hkv; ++h) {
      const KV* kbase = c.k + h * p.k_s2;
      const KV* vbase = c.v + h * p.v_s2;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = h * G + g;
        prefetch_rows<KV>(p, b, start + n, end, hq * kChunk / (p.Hkv * G), (hq + 1) * kChunk / (p.Hkv * G));
        const float* qg = qf + hq * D;
        float cmax = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) {
          const KV* kr = kbase + t * p.k_s1;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) dot += qg[d] * to_f(kr[d]);
          s[t] = dot;
          cmax = std::max(cmax, dot);
        }
        const float mnew = std::max(m[hq], cmax);
        const float alpha = std::exp(m[hq] - mnew);
        float psum = 0.f;
        for (int64_t t = 0; t < n; ++t) {
          s[t] = std::exp(s[t] - mnew);
          psum += s[t];
        }
        l[hq] = l[hq] * alpha + psum;
        m[hq] = mnew;
        float* ag = acc + hq * D;
        if (alpha != 1.f) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) ag[d] *= alpha;
        }
        for (int64_t t = 0; t < n; ++t) {
          const KV* vr = vbase + t * p.v_s1;
          const float pt = s[t];
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) ag[d] += pt * to_f(vr[d]);
        }
      }
    }
  }
}

// Lazy rescaling (the vector kernels): the reference max m only moves when a chunk's score exceeds it by
// more than kLazyMargin, so most chunks skip the max-reduction and the rescale of acc/l (p <= e^8: no
// overflow).
constexpr float kLazyMargin = 8.f;

#if NEUTRINO_HAVE_AVX512
// AVX-512 kernel for D = 16 * NV. kDot: QK^T with AVX512-BF16 dot products straight on the bf16 cache
// and the bf16 q (exact bf16 products, fp32 sums; ~10% faster than converting K to fp32 first).

template <typename KV, int NV, bool kDot>
void unit_avx512(const Params& p, int64_t b, int64_t begin, int64_t end, const float* qf, float* acc, float* m,
                 float* l) {
  constexpr int64_t D = 16 * NV;
  static_assert(!kDot || (std::is_same_v<KV, c10::BFloat16> && NV % 2 == 0), "bf16 dot path needs D % 32 == 0");
  const int64_t G = p.G, Hq = p.Hkv * p.G;
  alignas(64) float pbuf[kChunk];
  for (int64_t start = begin, step = 0; start < end; start += step) {
    const Chunk<KV> c = chunk_at<KV>(p, b, start, end);
    const int n = static_cast<int>(step = c.n);
    const __mmask16 mask = n == kChunk ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
    for (int64_t h = 0; h < p.Hkv; ++h) {
      const KV* kbase = c.k + h * p.k_s2;
      const KV* vbase = c.v + h * p.v_s2;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = h * G + g;
        // The next chunk usually lives in another, randomly placed block: fetch it while this one
        // computes, spread over this chunk's Hq iterations so the fetches don't queue up in one burst
        // (~1.8x faster on a cold cache than relying on the hardware prefetchers).
        prefetch_rows<KV>(p, b, start + n, end, hq * kChunk / Hq, (hq + 1) * kChunk / Hq);
        // Scores of the chunk's tokens: one partial-sum vector per token, then a transposing reduction.
        __m512 part[kChunk];
        if constexpr (kDot) {
#if NEUTRINO_HAVE_BF16
          const c10::BFloat16* qrow = static_cast<const c10::BFloat16*>(p.q) + b * p.q_s0 + hq * p.q_s1;
          __m512i qb[NV / 2];
          for (int j = 0; j < NV / 2; ++j) qb[j] = _mm512_loadu_si512(qrow + 32 * j);
          for (int t = 0; t < kChunk; ++t) {
            if (t < n) {
              const KV* kr = kbase + t * p.k_s1;
              __m512 s = _mm512_setzero_ps();
              for (int j = 0; j < NV / 2; ++j)
                s = _mm512_dpbf16_ps(s, (__m512bh)qb[j], (__m512bh)_mm512_loadu_si512(kr + 32 * j));
              part[t] = s;
            } else {
              part[t] = _mm512_setzero_ps();
            }
          }
#endif
        } else {
          __m512 qv[NV];
          for (int v = 0; v < NV; ++v) qv[v] = _mm512_loadu_ps(qf + hq * D + 16 * v);
          for (int t = 0; t < kChunk; ++t) {
            if (t < n) {
              const KV* kr = kbase + t * p.k_s1;
              __m512 s = _mm512_mul_ps(qv[0], load16(kr));
              for (int v = 1; v < NV; ++v) s = _mm512_fmadd_ps(qv[v], load16(kr + 16 * v), s);
              part[t] = s;
            } else {
              part[t] = _mm512_setzero_ps();
            }
          }
        }
        __m512 scores = hsum16(part);
        if constexpr (kDot) scores = _mm512_mul_ps(scores, _mm512_set1_ps(p.scale));  // q was not pre-scaled
        // Online softmax update.
        const bool rescale =
            _mm512_mask_cmp_ps_mask(mask, scores, _mm512_set1_ps(m[hq] + kLazyMargin), _CMP_GT_OQ) != 0;
        __m512 alpha_v = _mm512_set1_ps(1.f);
        if (rescale) {  // always on the first chunk (m = -inf)
          const float mnew = std::max(m[hq], _mm512_mask_reduce_max_ps(mask, scores));
          alpha_v = exp512(_mm512_set1_ps(m[hq] - mnew));  // m = -inf -> ~0 (acc and l are 0 then anyway)
          l[hq] *= _mm512_cvtss_f32(alpha_v);
          m[hq] = mnew;
        }
        const __m512 pr = _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(scores, _mm512_set1_ps(m[hq]))));
        l[hq] += _mm512_reduce_add_ps(pr);
        _mm512_store_ps(pbuf, pr);
        // acc += p^T V
        float* ag = acc + hq * D;
        __m512 av[NV];
        for (int v = 0; v < NV; ++v) av[v] = _mm512_loadu_ps(ag + 16 * v);
        if (rescale)
          for (int v = 0; v < NV; ++v) av[v] = _mm512_mul_ps(av[v], alpha_v);
        for (int t = 0; t < n; ++t) {
          const __m512 pt = _mm512_set1_ps(pbuf[t]);
          const KV* vr = vbase + t * p.v_s1;
          for (int v = 0; v < NV; ++v) av[v] = _mm512_fmadd_ps(pt, load16(vr + 16 * v), av[v]);
        }
        for (int v = 0; v < NV; ++v) _mm512_storeu_ps(ag + 16 * v, av[v]);
      }
    }
  }
}
#endif  // NEUTRINO_HAVE_AVX512

#if NEUTRINO_HAVE_AVX2 && !NEUTRINO_HAVE_AVX512
// AVX2 kernel for D = 8 * NV, the AVX-512 one's structure with 8-lane vectors: a chunk's 16 scores are two
// vectors, each from 8 per-token partial-sum vectors by a transposing reduction.
inline __m256 hsum8x8(const __m256 (&v)[8]) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

template <typename KV, int NV>
void unit_avx2(const Params& p, int64_t b, int64_t begin, int64_t end, const float* qf, float* acc, float* m,
               float* l) {
  constexpr int64_t D = 8 * NV;
  const int64_t G = p.G, Hq = p.Hkv * p.G;
  alignas(32) float pbuf[kChunk];
  const __m256 lane = _mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t start = begin, step = 0; start < end; start += step) {
    const Chunk<KV> c = chunk_at<KV>(p, b, start, end);
    const int n = static_cast<int>(step = c.n);
    const __m256 nv = _mm256_set1_ps(static_cast<float>(n));
    const __m256 valid[2] = {_mm256_cmp_ps(lane, nv, _CMP_LT_OQ),
                             _mm256_cmp_ps(_mm256_add_ps(lane, _mm256_set1_ps(8.f)), nv, _CMP_LT_OQ)};
    for (int64_t h = 0; h < p.Hkv; ++h) {
      const KV* kbase = c.k + h * p.k_s2;
      const KV* vbase = c.v + h * p.v_s2;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = h * G + g;
        prefetch_rows<KV>(p, b, start + n, end, hq * kChunk / Hq, (hq + 1) * kChunk / Hq);
        const float* qg = qf + hq * D;
        __m256 sc[2];
        for (int half = 0; half < 2; ++half) {
          __m256 part[8];
          for (int i = 0; i < 8; ++i) {
            const int t = 8 * half + i;
            if (t < n) {
              const KV* kr = kbase + t * p.k_s1;
              __m256 s = _mm256_mul_ps(_mm256_loadu_ps(qg), load8(kr));
              for (int v = 1; v < NV; ++v) s = _mm256_fmadd_ps(_mm256_loadu_ps(qg + 8 * v), load8(kr + 8 * v), s);
              part[i] = s;
            } else {
              part[i] = _mm256_setzero_ps();
            }
          }
          sc[half] = _mm256_blendv_ps(ninf, hsum8x8(part), valid[half]);
        }
        const __m256 thr = _mm256_set1_ps(m[hq] + kLazyMargin);
        const bool rescale = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(sc[0], thr, _CMP_GT_OQ),
                                                             _mm256_cmp_ps(sc[1], thr, _CMP_GT_OQ))) != 0;
        float alpha = 1.f;
        if (rescale) {  // always on the first chunk (m = -inf)
          const float mnew = std::max(m[hq], hmax8(_mm256_max_ps(sc[0], sc[1])));
          alpha = std::exp(m[hq] - mnew);  // m = -inf -> 0 (acc and l are 0 then anyway)
          l[hq] *= alpha;
          m[hq] = mnew;
        }
        const __m256 mv = _mm256_set1_ps(m[hq]);
        const __m256 p0 = _mm256_and_ps(exp256(_mm256_sub_ps(sc[0], mv)), valid[0]);
        const __m256 p1 = _mm256_and_ps(exp256(_mm256_sub_ps(sc[1], mv)), valid[1]);
        l[hq] += hsum8(_mm256_add_ps(p0, p1));
        _mm256_store_ps(pbuf, p0);
        _mm256_store_ps(pbuf + 8, p1);
        float* ag = acc + hq * D;
        __m256 av[NV];
        for (int v = 0; v < NV; ++v) av[v] = _mm256_loadu_ps(ag + 8 * v);
        if (rescale)
          for (int v = 0; v < NV; ++v) av[v] = _mm256_mul_ps(av[v], _mm256_set1_ps(alpha));
        for (int t = 0; t < n; ++t) {
          const __m256 pt = _mm256_set1_ps(pbuf[t]);
          const KV* vr = vbase + t * p.v_s1;
          for (int v = 0; v < NV; ++v) av[v] = _mm256_fmadd_ps(pt, load8(vr + 8 * v), av[v]);
        }
        for (int v = 0; v < NV; ++v) _mm256_storeu_ps(ag + 8 * v, av[v]);
      }
    }
  }
}
#endif  // NEUTRINO_HAVE_AVX2 && !NEUTRINO_HAVE_AVX512

using UnitFn = void (*)(const Params&, int64_t, int64_t, int64_t, const float*, float*, float*, float*);

#if NEUTRINO_HAVE_AVX512
template <typename KV, int NV>
UnitFn pick_avx512(bool dot_ok) {
#if NEUTRINO_HAVE_BF16
  if constexpr (std::is_same_v<KV, c10::BFloat16> && NV % 2 == 0)
    if (dot_ok) return unit_avx512<KV, NV, true>;
#endif
  (void)dot_ok;
  return unit_avx512<KV, NV, false>;
}
#endif

// dot_ok: q is bf16 (the AVX512-BF16 QK^T path needs bf16 on both sides).
template <typename KV>
UnitFn pick_unit(int64_t D, bool force_generic, bool dot_ok) {
#if NEUTRINO_HAVE_AVX512
  if (!force_generic) {
    switch (D) {
      case 16: return pick_avx512<KV, 1>(dot_ok);
      case 32: return pick_avx512<KV, 2>(dot_ok);
      case 64: return pick_avx512<KV, 4>(dot_ok);
      case 80: return pick_avx512<KV, 5>(dot_ok);
      case 96: return pick_avx512<KV, 6>(dot_ok);
      case 128: return pick_avx512<KV, 8>(dot_ok);
      case 256: return pick_avx512<KV, 16>(dot_ok);
      default: break;
    }
  }
#elif NEUTRINO_HAVE_AVX2
  if (!force_generic) {
    switch (D) {
      case 32: return unit_avx2<KV, 4>;
      case 64: return unit_avx2<KV, 8>;
      case 80: return unit_avx2<KV, 10>;
      case 96: return unit_avx2<KV, 12>;
      case 128: return unit_avx2<KV, 16>;
      default: break;
    }
  }
#endif
  (void)D; (void)force_generic; (void)dot_ok;
  return unit_generic<KV>;
}

// Sequences longer than kSplitTokens are split into parts of that many tokens (rounded up to whole
// blocks), processed as independent units and merged (flash-decoding). The split depends only on the
// sequence's own length, never on the batch or the thread count, so a sequence's output is bitwise the
// same whatever it is batched with and however many threads run (batch invariance).
constexpr int64_t kSplitTokens = 256;

// The schedule of one call: sequence b owns units [first[b], first[b + 1]); split sequences also own
// partial-state slots, merged by whichever thread finishes a sequence's last part.
template <typename QT>
class Job final : public neutrino::DecodeAttention::Work {
 public:
  Job(const Params& p, UnitFn unit)
      : p_(p), unit_(unit), Hq_(p.Hkv * p.G), HD_(Hq_ * p.D), part_(HD_ + 2 * Hq_),
        split_((kSplitTokens + p.bs - 1) / p.bs * p.bs), first_(p.B + 1, 0), slot_(p.B, -1),
        remaining_(new std::atomic<int64_t>[p.B]) {
    int64_t num_slots = 0;
    for (int64_t b = 0; b < p.B; ++b) {
      const int64_t len = p.seq_lens[b], parts = std::max<int64_t>(1, (len + split_ - 1) / split_);
      first_[b + 1] = first_[b] + parts;
      if (parts > 1) {
        slot_[b] = num_slots;
        num_slots += parts;
      }
      total_len_ += len;
      remaining_[b].store(parts, std::memory_order_relaxed);
    }
    partial_.resize(num_slots * part_);
  }
  void rebind(const void* k, const void* v) override {
    p_.k = k;
    p_.v = v;
    for (int64_t b = 0; b < p_.B; ++b) remaining_[b].store(first_[b + 1] - first_[b], std::memory_order_relaxed);
  }
  int64_t units() const override { return first_[p_.B]; }
  int64_t scratch_floats() const override { return 2 * HD_ + 2 * Hq_; }  // qf, acc, m, l
  bool parallel() const override { return total_len_ * HD_ >= kMinParallelWork; }

  void run(int64_t i, float* st) override {
    const int64_t b = std::upper_bound(first_.begin(), first_.end(), i) - first_.begin() - 1;
    const int64_t j = i - first_[b], len = p_.seq_lens[b];
    float* qf = st;
    float* acc = st + HD_;
    float* m = st + 2 * HD_;
    float* l = m + Hq_;
    load_q<QT>(p_, b, qf);
    std::fill(acc, acc + HD_, 0.f);
    std::fill(m, m + Hq_, -std::numeric_limits<float>::infinity());
    std::fill(l, l + Hq_, 0.f);
    unit_(p_, b, j * split_, std::min(len, (j + 1) * split_), qf, acc, m, l);
    if (slot_[b] < 0) {
      store_out<QT>(p_, b, acc, l);
      return;
    }
    std::copy(acc, acc + part_, partial_.data() + (slot_[b] + j) * part_);  // acc, m, l are contiguous
    if (remaining_[b].fetch_sub(1, std::memory_order_acq_rel) == 1) merge(b, st);
  }

 private:
  void merge(int64_t b, float* st) {
    const int64_t parts = first_[b + 1] - first_[b];
    const float* base = partial_.data() + slot_[b] * part_;
    float* acc = st + HD_;
    float* l = st + 2 * HD_ + Hq_;
    for (int64_t hq = 0; hq < Hq_; ++hq) {
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < parts; ++j) mx = std::max(mx, base[j * part_ + HD_ + hq]);
      float* a = acc + hq * p_.D;
      std::fill(a, a + p_.D, 0.f);
      l[hq] = 0.f;
      for (int64_t j = 0; j < parts; ++j) {
        const float* pj = base + j * part_;
        const float w = std::exp(pj[HD_ + hq] - mx);  // every part is non-empty, so mx is finite
        l[hq] += w * pj[HD_ + Hq_ + hq];
        for (int64_t d = 0; d < p_.D; ++d) a[d] += w * pj[hq * p_.D + d];
      }
    }
    store_out<QT>(p_, b, acc, l);
  }

  Params p_;
  UnitFn unit_;
  int64_t Hq_, HD_, part_, split_, total_len_ = 0;
  std::vector<int64_t> first_, slot_;
  std::vector<float> partial_;
  std::unique_ptr<std::atomic<int64_t>[]> remaining_;
};

}  // namespace

namespace neutrino {

DecodeAttention::DecodeAttention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                                 const at::Tensor& value_cache, const at::Tensor& block_tables,
                                 const at::Tensor& seq_lens, double scale, bool force_generic, bool split_heads) {
  TORCH_CHECK(q.device().is_cpu() && out.device().is_cpu() && key_cache.device().is_cpu() &&
                  value_cache.device().is_cpu() && block_tables.device().is_cpu() && seq_lens.device().is_cpu(),
              "paged_decode_attention: all tensors must be on the CPU");
  TORCH_CHECK(q.dim() == 3 && out.sizes() == q.sizes(), "q and out must be [B, Hq, D] of the same shape");
  TORCH_CHECK(key_cache.dim() == 4 && value_cache.sizes() == key_cache.sizes(),
              "key_cache/value_cache must be [num_blocks, block_size, Hkv, D]");
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type(), "key/value cache dtypes differ");
  TORCH_CHECK(out.scalar_type() == q.scalar_type(), "out must have q's dtype");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t NB = key_cache.size(0), bs = key_cache.size(1), Hkv = key_cache.size(2);
  TORCH_CHECK(key_cache.size(3) == D, "head_dim of q and the cache differ");
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "Hq must be a multiple of Hkv");
  TORCH_CHECK(q.stride(2) == 1 && out.stride(2) == 1 && key_cache.stride(3) == 1 && value_cache.stride(3) == 1,
              "the head_dim axis must be contiguous");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == B && block_tables.stride(1) == 1,
              "block_tables must be [B, max_blocks] with contiguous rows");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong || block_tables.scalar_type() == at::kInt,
              "block_tables must be int64 or int32");
  TORCH_CHECK(seq_lens.dim() == 1 && seq_lens.size(0) == B && seq_lens.scalar_type() == at::kLong &&
                  seq_lens.is_contiguous(),
              "seq_lens must be a contiguous int64 [B] tensor");

  Params p;
  p.B = B; p.Hkv = Hkv; p.G = Hq / Hkv; p.D = D; p.bs = bs; p.num_blocks = NB;
  p.max_blocks = block_tables.size(1);
  p.seq_lens = seq_lens.data_ptr<int64_t>();
  p.block_tables = block_tables.data_ptr();
  p.tables_i32 = block_tables.scalar_type() == at::kInt;
  p.bt_s0 = block_tables.stride(0);
  p.q = q.data_ptr(); p.q_s0 = q.stride(0); p.q_s1 = q.stride(1);
  p.out = out.data_ptr(); p.o_s0 = out.stride(0); p.o_s1 = out.stride(1);
  p.k = key_cache.data_ptr(); p.k_s0 = key_cache.stride(0); p.k_s1 = key_cache.stride(1); p.k_s2 = key_cache.stride(2);
  p.v = value_cache.data_ptr(); p.v_s0 = value_cache.stride(0); p.v_s1 = value_cache.stride(1); p.v_s2 = value_cache.stride(2);
  p.scale = static_cast<float>(scale);

  // Validate the metadata up front (cheap: B * blocks reads) so the kernel never reads out of bounds.
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = p.seq_lens[b];
    TORCH_CHECK(len >= 0 && len <= p.max_blocks * bs, "seq_lens[", b, "] = ", len, " does not fit the block table");
    for (int64_t i = 0, nblk = (len + bs - 1) / bs; i < nblk; ++i) {
      const int64_t bid = block_id(p, b, i);
      TORCH_CHECK(bid >= 0 && bid < NB, "block_tables[", b, ", ", i, "] = ", bid, " is out of range");
    }
  }
  if (B == 0 || Hq == 0 || D == 0) return;

  UnitFn unit;
  switch (key_cache.scalar_type()) {
    case at::kFloat: unit = pick_unit<float>(D, force_generic, false); break;
    case at::kBFloat16: unit = pick_unit<c10::BFloat16>(D, force_generic, q.scalar_type() == at::kBFloat16); break;
    case at::kHalf: unit = pick_unit<c10::Half>(D, force_generic, false); break;
    default: TORCH_CHECK(false, "unsupported KV cache dtype ", key_cache.scalar_type());
  }
  // One job per kv head when split (a head's Params: Hkv = 1, pointers at its first element).
  heads_ = split_heads ? Hkv : 1;
  kv_es_ = key_cache.element_size();
  k_s2_ = key_cache.stride(2);
  v_s2_ = value_cache.stride(2);
  const int64_t qes = q.element_size();
  for (int64_t h = 0; h < heads_; ++h) {
    Params ph = p;
    if (heads_ > 1) {
      ph.Hkv = 1;
      ph.q = static_cast<const char*>(p.q) + h * p.G * p.q_s1 * qes;
      ph.out = static_cast<char*>(p.out) + h * p.G * p.o_s1 * qes;
      ph.k = static_cast<const char*>(p.k) + h * k_s2_ * kv_es_;
      ph.v = static_cast<const char*>(p.v) + h * v_s2_ * kv_es_;
    }
    switch (q.scalar_type()) {
      case at::kFloat: works_.push_back(std::make_unique<Job<float>>(ph, unit)); break;
      case at::kBFloat16: works_.push_back(std::make_unique<Job<c10::BFloat16>>(ph, unit)); break;
      case at::kHalf: works_.push_back(std::make_unique<Job<c10::Half>>(ph, unit)); break;
      default: TORCH_CHECK(false, "unsupported q dtype ", q.scalar_type());
    }
  }
}

void DecodeAttention::rebind(const void* key_cache, const void* value_cache) {
  for (int64_t h = 0; h < static_cast<int64_t>(works_.size()); ++h)
    works_[h]->rebind(static_cast<const char*>(key_cache) + h * k_s2_ * kv_es_,
                      static_cast<const char*>(value_cache) + h * v_s2_ * kv_es_);
}


void paged_decode_attention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                            const at::Tensor& value_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale, bool force_generic) {
  DecodeAttention job(out, q, key_cache, value_cache, block_tables, seq_lens, scale, force_generic, false);
  const int64_t nthreads = !job.parallel() || at::in_parallel_region() ? 1 : at::get_num_threads();
  parallel_dynamic(job.units(), nthreads, job.scratch_floats(), [&](int64_t i, float* st) { job.run(i, st); });
}

std::string attention_isa() {
#if NEUTRINO_HAVE_BF16
  return "avx512+bf16";
#elif NEUTRINO_HAVE_AVX512
  return "avx512";
#elif NEUTRINO_HAVE_AVX2
  return "avx2";
#else
  return "generic";
#endif
}

}  // namespace neutrino
