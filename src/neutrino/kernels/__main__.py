"""`python -m neutrino.kernels`: which CPU kernel variants were built, which this CPU runs, which loads."""

from __future__ import annotations

import sys

from neutrino.kernels import loader


def main() -> int:
    print(f"kernel variants built: {', '.join(loader.built_variants()) or 'none'} (in {loader.PACKAGE_DIR})")
    print(f"this CPU runs: {', '.join(loader.supported_variants()) or 'none'}")
    kernels = loader.load()
    if kernels is None:
        print(f"WARNING: C++ CPU kernels unavailable, the engine will use the slower torch paths: {loader.last_error}")
        return 1
    print(kernels.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
