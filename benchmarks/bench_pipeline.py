"""The project's main cost figure: `python benchmarks/bench_pipeline.py [--full]` (same as `vidseg bench`).

Prints work per frame (UNet samples, VAE encodes/decodes), TFLOP per frame at SD 2.1 size (meta-device
count through the real code), CPU seconds per frame of the tiny model, peak memory, and with --full on a
GPU the frames per second of full-size SD 2.1 (random weights) at the paper's settings.
"""

import sys

from vidseg_nb.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
