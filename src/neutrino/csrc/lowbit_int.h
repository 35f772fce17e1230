// The integer path of the low-bit linears, shared by its AVX512-VNNI (lowbit.cpp) and AVX2
// (lowbit_avx2.cpp) code: x is quantized per token and per block of B columns (B | group_size,
// B % 16 == 0): xq = round(x / xs), xs = max|x| / 127, and the kernel computes y = x^ @ W^T for
// x^ = xq * xs with integer dot products of xq and the codes, in the 16-row blocked layout of lowbit.cpp.
// Per block y += xs * isum; per group y = s * that + o * sum(x^) (sum(x^), not sum(x): with the float sum
// the rounding of x would not cancel against o = -z s for zero-centred weights).
#pragma once

#include <cstdint>
#include <cstring>

namespace neutrino::lowbit {

struct VNArgs {
  const int8_t* xq;   // [M, K] quantized activations, columns reordered per chunk as the ISA's code needs
  const float* xs;    // [M, K / B] block scales
  const int32_t* xc;  // [M, K / B] -128 * block sums of xq (VNNI int8 codes only)
  const float* xg;    // [M, G] group sums of x^ (only with offsets)
  const uint8_t* q; const void* s; const void* o;
  int64_t K, B, G, gs, N;
  float* y;
};

// Activation block for a group: 32 columns (16 when the group is not a multiple of 32); 0: no integer path.
inline int64_t act_block(int64_t group_size) {
  return group_size % 32 == 0 ? 32 : group_size % 16 == 0 ? 16 : 0;
}

inline int32_t load_i32(const int8_t* p) { int32_t v; std::memcpy(&v, p, 4); return v; }

// The AVX2 integer path (lowbit_avx2.cpp; variants without VNNI): quantizes x [M, K] float32 into the
// VNArgs buffers (xq [M, K], xs [M, K / B], xg [M, G] when non-null), then runs the row blocks [b0, b1).
void avx2_quantize(const float* xf, int64_t M, int64_t K, int64_t B, int64_t gs, bool int4, int8_t* xq,
                   float* xs, float* xg);
// scale_type: 0 float32, 1 bfloat16, 2 float16.
void avx2_integer_blocks(const VNArgs& a, int bits, int scale_type, int64_t b0, int64_t b1, int64_t M);

}  // namespace neutrino::lowbit
