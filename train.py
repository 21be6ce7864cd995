"""Train a GAN: ``python train.py --config configs/quickstart.yaml [--key=value ...]``."""

from lit_gan.cli import main

if __name__ == "__main__":
    main()
