"""Train the digit classifier by the shipped one's recipe, save it, and say whether it is the shipped one.

    python scripts/train_digit_classifier.py --out /tmp/digit_classifier.pt

The digit metrics (stacked-digit modes and KL, the digit Fréchet distance) score with the classifier
shipped in lit_gan/metrics/digit_classifier.pt, so that every machine scores with the same network.
This is how it was made (seed 0, 15 epochs, 2 threads; about 25 s on 2 CPU cores). On another CPU the
same recipe may round differently and give other weights: the digest printed here tells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_gan.files import replacing
from lit_gan.metrics.digits import SHIPPED_CLASSIFIER, load_digit_classifier, train_digit_classifier, weights_digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help=f"where to save it (the shipped one is {SHIPPED_CLASSIFIER}; to replace it, name it)")
    out = parser.parse_args(argv).out
    model, accuracy = train_digit_classifier()
    with replacing(out) as temporary:
        torch.save({"state_dict": model.state_dict(), "held_out_accuracy": accuracy}, temporary)
    shipped = weights_digest(load_digit_classifier())
    ours = weights_digest(model)
    print(f"{out}: held-out accuracy {accuracy:.4f}, weights {ours}: "
          f"{'the same as' if ours == shipped else 'NOT the same as'} the shipped classifier's ({shipped})")


if __name__ == "__main__":
    main()
