"""Builds the CPU kernels (src/neutrino/csrc) at install, once per ISA variant (neutrino/kernels/variants.py).

The build needs torch already installed (`pip install --no-build-isolation`, as scripts/install.sh does)
and a C++17 compiler. Each variant is an optional extension: if one fails to compile, the install goes
on without it and the engine says so at WARNING level when it starts (it then runs the torch paths).
`NEUTRINO_KERNEL_VARIANTS=avx2,avx512` limits the variants built; `NEUTRINO_BUILD_KERNELS=0` builds none.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
CSRC = Path("src/neutrino/csrc")


def _extensions() -> tuple[list, dict]:
    if os.environ.get("NEUTRINO_BUILD_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("neutrino: torch is not installed in the build environment; building no CPU kernels "
              "(install torch first and use pip install --no-build-isolation)")
        return [], {}
    spec = runpy.run_path(str(ROOT / "src/neutrino/kernels/variants.py"))
    wanted = os.environ.get("NEUTRINO_KERNEL_VARIANTS", "")
    names = [v.strip() for v in wanted.split(",") if v.strip()] or list(spec["VARIANTS"])
    exts = []
    for name in names:
        flags, _ = spec["VARIANTS"][name]
        exts.append(CppExtension(
            f"neutrino.{spec['module_name'](name)}",
            [str(CSRC / s) for s in spec["SOURCES"]],
            extra_compile_args=[*spec["COMMON_FLAGS"], *flags, f'-DNEUTRINO_VARIANT="{name}"'],
            extra_link_args=["-fopenmp"],  # libgomp.so.1: the one torch loaded, one shared OpenMP pool
            optional=True,
        ))

    class BuildPerVariant(BuildExtension):
        """One build directory per variant: the variants compile the same sources with other flags."""

        def build_extension(self, ext) -> None:
            base = self.build_temp
            self.build_temp = os.path.join(base, ext.name.rsplit(".", 1)[-1])
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, which `optional` misses
                print(f"neutrino: WARNING: kernel variant {ext.name} failed to build, installing without it: {e}")
            finally:
                self.build_temp = base

    return exts, {"build_ext": BuildPerVariant.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
