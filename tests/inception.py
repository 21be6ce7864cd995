"""A randomly initialised torch-fidelity Inception saved as a weights file: the real code path, offline."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def make_random_inception_weights(path: Path) -> Path:
    from torch_fidelity import feature_extractor_inceptionv3 as module

    # Construct without the download the constructor would start, then save the random weights.
    original_url, original_load = module.load_state_dict_from_url, module.FeatureExtractorInceptionV3.load_state_dict
    module.load_state_dict_from_url = lambda *args, **kwargs: None
    module.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        torch.manual_seed(0)
        model = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        module.load_state_dict_from_url = original_url
        module.FeatureExtractorInceptionV3.load_state_dict = original_load
    # PyTorch's default init shrinks activations layer by layer until every feature is ~0;
    # He initialisation keeps them alive, so distances between sets stay meaningful.
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path
