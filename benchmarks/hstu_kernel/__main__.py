"""python -m benchmarks.hstu_kernel: the kernel benchmark's command line (benchmarks.hstu_kernel.cli)."""

import sys

from benchmarks.hstu_kernel.cli import main

if __name__ == "__main__":  # (asv imports every module here: importing this one must not run it)
    sys.exit(main())
