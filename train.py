"""Train a GAN: ``python train.py --config configs/quickstart.yaml [--key=value ...]``."""

import sys

from lit_gan.cli import exit_status, main

if __name__ == "__main__":
    sys.exit(exit_status(main()))
