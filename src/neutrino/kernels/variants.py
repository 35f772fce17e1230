"""The ISA variants the CPU kernels (`src/neutrino/csrc`) are compiled in at install, best first.

Plain data, no imports: `setup.py` reads this file before the package (or torch) can be imported.
Each variant is the same sources compiled with other `-m` flags; the code paths inside are chosen at
compile time from the ISA macros (`csrc/vec.h`). `cpu_flags` are the /proc/cpuinfo flags (i.e. CPUID
bits) a CPU needs to run the variant; the loader picks the first variant whose flags the CPU has.

- avx512bf16: AVX-512 F/BW/CD/DQ/VL + BF16 + VNNI + VBMI (Intel Cooper Lake / Sapphire Rapids and later,
  AMD Zen 4 and later): every kernel, bf16 dot products in attention, the int8 integer path of the
  low-bit linears. AMX is not used by these kernels (the bf16 and int8 GEMMs go through oneDNN, which
  uses AMX where the CPU has it).
- avx512: AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Ice Lake without BF16): AVX-512 decode attention and fp32-FMA
  low-bit linears; no prefill or fused bf16 kernels (the torch path runs those).
- avx2: x86-64-v3 (AVX2, FMA, F16C): the portable C++ paths, auto-vectorised for AVX2.
"""

from __future__ import annotations

_V3 = ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe")
_V4 = (*_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")

# name -> (compiler flags, required /proc/cpuinfo flags)
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "avx512bf16": (
        ("-march=x86-64-v4", "-mavx512bf16", "-mavx512vnni", "-mavx512vbmi"),
        (*_V4, "avx512_bf16", "avx512_vnni", "avx512vbmi"),
    ),
    "avx512": (("-march=x86-64-v4",), _V4),
    "avx2": (("-march=x86-64-v3",), _V3),
}

COMMON_FLAGS = ("-O3", "-g0", "-fopenmp", "-fno-math-errno", "-std=c++20")
SOURCES = ("bindings.cpp", "paged_decode.cpp", "paged_prefill.cpp", "fused.cpp", "lowbit.cpp", "lowbit_avx2.cpp",
           "w8a8.cpp", "dense.cpp", "decoder_plan.cpp")


def module_name(variant: str) -> str:
    """The extension's module name inside the package (`neutrino/_kernels_<variant>.so`)."""
    return f"_kernels_{variant}"
