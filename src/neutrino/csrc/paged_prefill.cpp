// Paged prefill attention for CPU, bf16 q and KV cache, causal, fp32 softmax and accumulation.
//
// Query rows are vector lanes: a row group is 16 consecutive query positions of one query head, so
// S^T = K Q^T is computed with one `vdpbf16ps` per (key, pair of head dims) on 16 rows at once, and the
// online softmax (running max, sum, rescale) is purely vertical: no horizontal reductions. Q is packed
// once per row group into pairs of head dims ([D/2][16] int32); per tile of 16 keys, K rows are copied
// into a local buffer (read by broadcasts) and V rows are interleaved in pairs of keys ([8][D] int32,
// head dims in the fixed order of unpacklo/hi_epi16), so P V is also one `vdpbf16ps` per (pair of keys,
// head dim) on 16 rows. The output accumulators O^T ([D][16] fp32) live in a per-unit scratch in L1.
//
// Work unit = (sequence, kv head, block of 16 query positions), all G query heads of that kv head (so a
// K/V tile is loaded and packed once for G row groups). Units are handed out dynamically, longest first.
// Every lane's arithmetic depends only on its own row and the fixed key tiling (absolute positions
// 0, 16, 32, ...), so a row's output is the same whatever the batch, chunking or thread count.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "vec.h"

#define NEUTRINO_HAVE_PREFILL NEUTRINO_HAVE_BF16

namespace {

using namespace neutrino::vec;

constexpr int kRows = 16;  // query rows per group (one vector of lanes)
constexpr int kKeys = 16;  // keys per tile

struct PrefillParams {
  int64_t Hkv, G, bs, num_blocks;
  const int64_t* q_start;  // per listed sequence: first q row
  const int64_t* q_len;    // per listed sequence: number of query rows
  const int64_t* seq_len;  // per listed sequence: context length after this step
  const void* block_tables; bool tables_i32; int64_t bt_s0;
  const c10::BFloat16* q; int64_t q_s0, q_s1;
  c10::BFloat16* out; int64_t o_s0, o_s1;
  const c10::BFloat16* k; int64_t k_s0, k_s1, k_s2;
  const c10::BFloat16* v; int64_t v_s0, v_s1, v_s2;
  float scale;
};

struct PrefillUnit {
  int64_t seq, row, head, q0, nrows, kend;  // listed sequence, its table row, kv head, first query row, rows, keys
};

inline int64_t prefill_block(const PrefillParams& p, int64_t row, int64_t i) {
  return p.tables_i32 ? static_cast<const int32_t*>(p.block_tables)[row * p.bt_s0 + i]
                      : static_cast<const int64_t*>(p.block_tables)[row * p.bt_s0 + i];
}

// Head-dim order of the interleaved V layout: within each 32 dims, unpacklo_epi16 of two rows yields
// dims 8L+0..3 of each 128-bit lane L, unpackhi_epi16 dims 8L+4..7.
inline int64_t vperm(int64_t j) {
  const int64_t c = j / 32, i = j % 32, half = i / 16, w = i % 16;
  return c * 32 + (w / 4) * 8 + half * 4 + w % 4;
}

#if NEUTRINO_HAVE_PREFILL

inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// S^T for one row group and one key tile: s[t] (lanes = rows) = sum_d Q[r, d] K[t, d].
template <int D>
inline void qk_tile(const int32_t* qp, const int32_t* kt, __m512 s[kKeys]) {
  for (int t = 0; t < kKeys; ++t) s[t] = _mm512_setzero_ps();
  for (int dp = 0; dp < D / 2; ++dp) {
    const __m512bh qv = as_bh(_mm512_loadu_si512(qp + dp * kRows));
    for (int t = 0; t < kKeys; ++t) s[t] = _mm512_dpbf16_ps(s[t], qv, as_bh(_mm512_set1_epi32(kt[t * (D / 2) + dp])));
  }
}

// O^T = alpha * O^T + P V for one row group: pp[tp] holds (p[2tp], p[2tp+1]) in bf16 per lane.
template <int D>
inline void pv_tile(const __m512i pp[kKeys / 2], const int32_t* vp, __m512 alpha, float* o) {
  for (int c = 0; c < D / 16; ++c) {
    __m512 acc[16];
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_mul_ps(_mm512_loadu_ps(o + (c * 16 + j) * kRows), alpha);
    for (int tp = 0; tp < kKeys / 2; ++tp) {
      const __m512bh pv = as_bh(pp[tp]);
      for (int j = 0; j < 16; ++j)
        acc[j] = _mm512_dpbf16_ps(acc[j], pv, as_bh(_mm512_set1_epi32(vp[tp * D + c * 16 + j])));
    }
    for (int j = 0; j < 16; ++j) _mm512_storeu_ps(o + (c * 16 + j) * kRows, acc[j]);
  }
}

// Online softmax over one tile for one row group; returns the packed bf16 probabilities in pp.
inline void softmax_tile(__m512 s[kKeys], __m512i rpos, int64_t k0, int64_t kt, bool masked, float scale,
                         float* m, float* l, __m512* alpha_out, __m512i pp[kKeys / 2]) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512 vscale = _mm512_set1_ps(scale);
  __mmask16 valid[kKeys];
  __m512 mx = ninf;
  for (int t = 0; t < kKeys; ++t) {
    s[t] = _mm512_mul_ps(s[t], vscale);
    valid[t] = 0xFFFF;
    if (masked) {
      valid[t] = t < kt ? _mm512_cmp_epi32_mask(rpos, _mm512_set1_epi32(static_cast<int>(k0 + t)), _MM_CMPINT_NLT)
                        : static_cast<__mmask16>(0);
      s[t] = _mm512_mask_mov_ps(ninf, valid[t], s[t]);
    }
    mx = _mm512_max_ps(mx, s[t]);
  }
  const __m512 mold = _mm512_loadu_ps(m);
  const __m512 mnew = _mm512_max_ps(mold, mx);  // finite: key 0 is visible to every row and comes first
  const __m512 alpha = exp512(_mm512_sub_ps(mold, mnew));
  __m512 sum = _mm512_setzero_ps();
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                       23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int tp = 0; tp < kKeys / 2; ++tp) {
    const __m512 p0 = _mm512_maskz_mov_ps(valid[2 * tp], exp512(_mm512_sub_ps(s[2 * tp], mnew)));
    const __m512 p1 = _mm512_maskz_mov_ps(valid[2 * tp + 1], exp512(_mm512_sub_ps(s[2 * tp + 1], mnew)));
    sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);
    pp[tp] = _mm512_permutexvar_epi16(idx, both);  // lane r: (p0[r], p1[r])
  }
  _mm512_storeu_ps(l, _mm512_fmadd_ps(_mm512_loadu_ps(l), alpha, sum));
  _mm512_storeu_ps(m, mnew);
  *alpha_out = alpha;
}

// Copies tile keys [k0, k0 + kt) of kv head h into kt_buf ([16][D] bf16, zero rows past kt) and
// interleaves the V rows by pairs of keys into vp ([8][D] int32).
template <int D>
void load_kv_tile(const PrefillParams& p, const PrefillUnit& u, int64_t k0, int64_t kt, c10::BFloat16* kbuf,
                  int32_t* vp) {
  alignas(64) c10::BFloat16 vrows[kKeys][D];
  for (int t = 0; t < kKeys; ++t) {
    if (t < kt) {
      const int64_t pos = k0 + t, bid = prefill_block(p, u.row, pos / p.bs), off = pos % p.bs;
      std::memcpy(kbuf + t * D, p.k + bid * p.k_s0 + off * p.k_s1 + u.head * p.k_s2, D * 2);
      std::memcpy(vrows[t], p.v + bid * p.v_s0 + off * p.v_s1 + u.head * p.v_s2, D * 2);
    } else {
      std::memset(kbuf + t * D, 0, D * 2);
      std::memset(vrows[t], 0, D * 2);
    }
  }
  for (int tp = 0; tp < kKeys / 2; ++tp)
    for (int c = 0; c < D / 32; ++c) {
      const __m512i a = _mm512_loadu_si512(vrows[2 * tp] + c * 32);
      const __m512i b = _mm512_loadu_si512(vrows[2 * tp + 1] + c * 32);
      _mm512_storeu_si512(vp + tp * D + c * 32, _mm512_unpacklo_epi16(a, b));
      _mm512_storeu_si512(vp + tp * D + c * 32 + 16, _mm512_unpackhi_epi16(a, b));
    }
}

// Scratch per unit (floats): per group qp [D/2*16], o [D*16], m [16], l [16]; then kbuf, vp.
template <int D>
int64_t prefill_scratch(int64_t G) {
  return G * (D / 2 * kRows + D * kRows + 2 * kRows) + kKeys * D / 2 + kKeys / 2 * D;
}

template <int D>
void prefill_unit(const PrefillParams& p, const PrefillUnit& u, float* scratch) {
  const int64_t G = p.G, per_group = D / 2 * kRows + D * kRows + 2 * kRows;
  auto* kbuf = reinterpret_cast<c10::BFloat16*>(scratch + G * per_group);
  auto* vp = reinterpret_cast<int32_t*>(scratch + G * per_group + kKeys * D / 2);
  const int64_t pos0 = p.seq_len[u.seq] - p.q_len[u.seq] + (u.q0 - p.q_start[u.seq]);  // position of row 0
  for (int64_t g = 0; g < G; ++g) {
    float* base = scratch + g * per_group;
    auto* qp = reinterpret_cast<int32_t*>(base);
    const int64_t hq = u.head * G + g;
    for (int64_t r = 0; r < kRows; ++r) {
      const auto* row = reinterpret_cast<const int32_t*>(p.q + (u.q0 + r) * p.q_s0 + hq * p.q_s1);
      for (int64_t dp = 0; dp < D / 2; ++dp) qp[dp * kRows + r] = r < u.nrows ? row[dp] : 0;
    }
    std::fill(base + D / 2 * kRows, base + per_group, 0.f);
    std::fill(base + D / 2 * kRows + D * kRows, base + D / 2 * kRows + D * kRows + kRows,
              -std::numeric_limits<float>::infinity());
  }
  const __m512i rpos = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(pos0)),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (int64_t k0 = 0; k0 < u.kend; k0 += kKeys) {
    const int64_t kt = std::min<int64_t>(kKeys, u.kend - k0);
    const bool masked = kt < kKeys || k0 + kKeys - 1 > pos0;  // some key lies past some row's position
    load_kv_tile<D>(p, u, k0, kt, kbuf, vp);
    for (int64_t g = 0; g < G; ++g) {
      float* base = scratch + g * per_group;
      float* o = base + D / 2 * kRows;
      float* m = o + D * kRows;
      __m512 s[kKeys], alpha;
      __m512i pp[kKeys / 2];
      qk_tile<D>(reinterpret_cast<const int32_t*>(base), reinterpret_cast<const int32_t*>(kbuf), s);
      softmax_tile(s, rpos, k0, kt, masked, p.scale, m, m + kRows, &alpha, pp);
      pv_tile<D>(pp, vp, alpha, o);
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float* o = scratch + g * per_group + D / 2 * kRows;
    const float* l = o + D * kRows + kRows;
    const int64_t hq = u.head * G + g;
    for (int64_t r = 0; r < u.nrows; ++r) {
      c10::BFloat16* row = p.out + (u.q0 + r) * p.o_s0 + hq * p.o_s1;
      const float inv = 1.f / l[r];  // > 0: key 0 is always visible
      for (int64_t j = 0; j < D; ++j) row[vperm(j)] = static_cast<c10::BFloat16>(o[j * kRows + r] * inv);
    }
  }
}

template <int D>
void prefill_run(const PrefillParams& p, std::vector<PrefillUnit>& units, int64_t work) {
  std::stable_sort(units.begin(), units.end(),
                   [](const PrefillUnit& a, const PrefillUnit& b) { return a.kend > b.kend; });
  int64_t nthreads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (work < kMinParallelWork) nthreads = 1;
  parallel_dynamic(static_cast<int64_t>(units.size()), nthreads, prefill_scratch<D>(p.G) + 16,
                   [&](int64_t i, float* scratch) { prefill_unit<D>(p, units[i], scratch); });
}

#endif  // NEUTRINO_HAVE_PREFILL

}  // namespace

namespace neutrino {

bool prefill_supported(int64_t D) {
  return NEUTRINO_HAVE_PREFILL && (D == 64 || D == 128 || D == 32 || D == 96 || D == 256);
}

void paged_prefill_attention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                             const at::Tensor& value_cache, const at::Tensor& block_tables,
                             const at::Tensor& seq_ids, const at::Tensor& query_start_loc,
                             const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(q.device().is_cpu() && out.device().is_cpu() && key_cache.device().is_cpu() &&
                  value_cache.device().is_cpu() && block_tables.device().is_cpu() && seq_ids.device().is_cpu() &&
                  query_start_loc.device().is_cpu() && seq_lens.device().is_cpu(),
              "paged_prefill_attention: all tensors must be on the CPU");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && out.scalar_type() == at::kBFloat16 &&
                  key_cache.scalar_type() == at::kBFloat16 && value_cache.scalar_type() == at::kBFloat16,
              "paged_prefill_attention needs bf16 q, out and KV cache");
  TORCH_CHECK(q.dim() == 3 && out.sizes() == q.sizes(), "q and out must be [T, Hq, D] of the same shape");
  TORCH_CHECK(key_cache.dim() == 4 && value_cache.sizes() == key_cache.sizes(),
              "key_cache/value_cache must be [num_blocks, block_size, Hkv, D]");
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t NB = key_cache.size(0), bs = key_cache.size(1), Hkv = key_cache.size(2);
  TORCH_CHECK(key_cache.size(3) == D, "head_dim of q and the cache differ");
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "Hq must be a multiple of Hkv");
  TORCH_CHECK(prefill_supported(D), "paged_prefill_attention: unsupported head_dim ", D, " or CPU");
  TORCH_CHECK(q.stride(2) == 1 && out.stride(2) == 1 && key_cache.stride(3) == 1 && value_cache.stride(3) == 1,
              "the head_dim axis must be contiguous");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.stride(1) == 1 &&
                  (block_tables.scalar_type() == at::kLong || block_tables.scalar_type() == at::kInt),
              "block_tables must be int64/int32 [num_seqs, max_blocks] with contiguous rows");
  const int64_t S = block_tables.size(0);
  for (const at::Tensor* t : {&seq_ids, &query_start_loc, &seq_lens})
    TORCH_CHECK(t->dim() == 1 && t->scalar_type() == at::kLong && t->is_contiguous(),
                "seq_ids, query_start_loc and seq_lens must be contiguous int64 vectors");
  TORCH_CHECK(query_start_loc.size(0) == S + 1 && seq_lens.size(0) == S,
              "query_start_loc must have num_seqs + 1 entries and seq_lens num_seqs");

  const int64_t P = seq_ids.size(0);
  const int64_t* ids = seq_ids.data_ptr<int64_t>();
  const int64_t* qsl = query_start_loc.data_ptr<int64_t>();
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  std::vector<int64_t> q_start(P), q_len(P), seq_len(P);
  PrefillParams p;
  p.Hkv = Hkv; p.G = Hq / Hkv; p.bs = bs; p.num_blocks = NB;
  p.block_tables = block_tables.data_ptr(); p.tables_i32 = block_tables.scalar_type() == at::kInt;
  p.bt_s0 = block_tables.stride(0);
  std::vector<PrefillUnit> units;
  int64_t work = 0;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t s = ids[i];
    TORCH_CHECK(s >= 0 && s < S, "seq_ids[", i, "] = ", s, " is out of range");
    q_start[i] = qsl[s]; q_len[i] = qsl[s + 1] - qsl[s]; seq_len[i] = lens[s];
    TORCH_CHECK(q_start[i] >= 0 && q_len[i] >= 0 && q_start[i] + q_len[i] <= T, "query rows of sequence ", s,
                " are out of range");
    TORCH_CHECK(seq_len[i] >= q_len[i] && seq_len[i] <= block_tables.size(1) * bs, "seq_lens[", s, "] = ",
                seq_len[i], " does not fit its query rows or block table");
    for (int64_t b = 0, nblk = (seq_len[i] + bs - 1) / bs; b < nblk; ++b) {
      const int64_t bid = prefill_block(p, s, b);
      TORCH_CHECK(bid >= 0 && bid < NB, "block_tables[", s, ", ", b, "] = ", bid, " is out of range");
    }
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t r0 = 0; r0 < q_len[i]; r0 += kRows) {
        const int64_t nrows = std::min<int64_t>(kRows, q_len[i] - r0);
        const int64_t kend = seq_len[i] - q_len[i] + r0 + nrows;  // last row's position + 1
        units.push_back({i, s, h, q_start[i] + r0, nrows, kend});
        work += kend * kRows * p.G * D;
      }
  }
  p.q_start = q_start.data(); p.q_len = q_len.data(); p.seq_len = seq_len.data();
  p.q = static_cast<const c10::BFloat16*>(q.data_ptr()); p.q_s0 = q.stride(0); p.q_s1 = q.stride(1);
  p.out = static_cast<c10::BFloat16*>(out.data_ptr()); p.o_s0 = out.stride(0); p.o_s1 = out.stride(1);
  p.k = static_cast<const c10::BFloat16*>(key_cache.data_ptr());
  p.k_s0 = key_cache.stride(0); p.k_s1 = key_cache.stride(1); p.k_s2 = key_cache.stride(2);
  p.v = static_cast<const c10::BFloat16*>(value_cache.data_ptr());
  p.v_s0 = value_cache.stride(0); p.v_s1 = value_cache.stride(1); p.v_s2 = value_cache.stride(2);
  p.scale = static_cast<float>(scale);
  if (units.empty()) return;
#if NEUTRINO_HAVE_PREFILL
  switch (D) {
    case 32: prefill_run<32>(p, units, work); break;
    case 64: prefill_run<64>(p, units, work); break;
    case 96: prefill_run<96>(p, units, work); break;
    case 128: prefill_run<128>(p, units, work); break;
    case 256: prefill_run<256>(p, units, work); break;
  }
#endif
}

}  // namespace neutrino
