"""Discriminators that look at several samples at once, so that a collapsed generator is easy to spot.

Each wraps any :class:`~lit_gan.nets.layers.FeatureDiscriminator` (every
discriminator in :mod:`lit_gan.nets`) and composes with every objective:

    discriminator:
      class_path: lit_gan.nets.MinibatchDiscrimination
      init_args:
        discriminator: {class_path: lit_gan.nets.MLPDiscriminator, init_args: {...}}
        num_kernels: 50
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from lit_gan.errors import ConfigError, require
from lit_gan.nets.layers import FeatureDiscriminator


def _require_feature_discriminator(discriminator: nn.Module, wrapper: str) -> None:
    require(isinstance(discriminator, FeatureDiscriminator) or hasattr(discriminator, "features"),
            f"{wrapper}.discriminator", type(discriminator).__name__,
            "a lit_gan.nets.FeatureDiscriminator (features(x) then a linear head), e.g. MLPDiscriminator")


class Packed(FeatureDiscriminator):
    """PacGAN (Lin et al. 2018, Sec. 3): D judges ``pack`` samples at once, concatenated along channels.

    A batch of ``n`` samples of shape ``(C, ...)`` becomes ``n / pack`` inputs
    of shape ``(pack * C, ...)``, consecutive samples packed together, so the
    wrapped discriminator must be built for ``pack * C`` input channels
    (features for 2D points). Real and generated samples are never mixed in
    one pack, and D gives one output per pack.
    """

    def __init__(self, discriminator: nn.Module, pack: int = 2):
        super().__init__()
        require(isinstance(pack, int) and pack >= 1, "Packed.pack", pack, "an integer >= 1")
        _require_feature_discriminator(discriminator, "Packed")
        self.discriminator = discriminator
        self.pack = pack
        inner_shape = tuple(getattr(discriminator, "input_shape", ()))
        if inner_shape:
            require(inner_shape[0] % pack == 0, "Packed.discriminator.input_shape", list(inner_shape),
                    f"a first dimension divisible by pack={pack} (pack x the data's channels)")
            self.input_shape = (inner_shape[0] // pack, *inner_shape[1:])
        self.feature_dim = discriminator.feature_dim
        self.head = discriminator.head

    def pack_inputs(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if n % self.pack:
            raise ConfigError(f"batch of {n} samples is not valid: expected a multiple of Packed.pack={self.pack} "
                              "(set data.batch_size, and model.generator_batch_size where set, accordingly)")
        expected = getattr(self, "input_shape", None)
        if expected is not None and tuple(x.shape[1:]) != tuple(expected):
            raise ConfigError(
                f"Packed.discriminator.input_shape={[expected[0] * self.pack, *expected[1:]]} is not valid: "
                f"expected pack x the data's shape {list(x.shape[1:])}, i.e. "
                f"{[x.shape[1] * self.pack, *x.shape[2:]]}")
        return x.reshape(n // self.pack, self.pack * x.shape[1], *x.shape[2:])

    def features(self, x: Tensor) -> Tensor:
        return self.discriminator.features(self.pack_inputs(x))

    def init_head(self, head: nn.Linear) -> None:
        self.discriminator.init_head(head)

    def forward(self, x: Tensor) -> Tensor:
        # The wrapped discriminator's own forward: a MinibatchStdDev or MinibatchDiscrimination inside it
        # appends its batch features (over the packs) before its wider head.
        return self.discriminator(self.pack_inputs(x))


class _FeatureLayer(FeatureDiscriminator):
    """A wrapped discriminator with extra batch-level features appended before a new linear head."""

    def __init__(self, discriminator: nn.Module, extra_features: int):
        super().__init__()
        _require_feature_discriminator(discriminator, type(self).__name__)
        # features() reads the inner D's features only: an inner layer's batch features would be dropped
        # (and its parameters never trained), so one minibatch layer per discriminator.
        nested = [type(m).__name__ for m in discriminator.modules() if isinstance(m, _FeatureLayer)]
        require(not nested, f"{type(self).__name__}.discriminator", type(discriminator).__name__,
                f"a discriminator without a minibatch layer of its own (it holds {nested[0] if nested else ''}); "
                "use one of MinibatchDiscrimination and MinibatchStdDev")
        self.discriminator = discriminator
        self.input_shape = getattr(discriminator, "input_shape", None)
        self.feature_dim = discriminator.feature_dim
        old_head = discriminator.head
        # The inner head is replaced by a wider one; removing it (also where a Packed inside shares it) keeps
        # DDP free of unused parameters and Adam on its one-buffer step.
        inner = discriminator
        while inner is not None:
            if getattr(inner, "head", None) is old_head:
                inner.head = None
            inner = getattr(inner, "discriminator", None)
        self.head = nn.Linear(self.feature_dim + extra_features, 1)
        discriminator.init_head(self.head)  # DCGAN's N(0, 0.02), SNGAN's Glorot: as the head it replaces
        if parametrize.is_parametrized(old_head):
            spectral_norm(self.head)

    def features(self, x: Tensor) -> Tensor:
        return self.discriminator.features(x)

    def batch_features(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        return self.head(torch.cat([f, self.batch_features(f)], dim=1)).squeeze(1)


class MinibatchDiscrimination(_FeatureLayer):
    """Minibatch discrimination (Salimans et al. 2016, Sec. 3.2).

    D's features ``f_i`` are mapped by a learned tensor ``T`` to ``M_i``
    (``num_kernels`` rows of ``kernel_dim``); each sample gets
    ``o(x_i)_b = sum_{j != i} exp(-||M_{i,b} - M_{j,b}||_1)``, its closeness to the
    rest of the batch, as ``num_kernels`` extra inputs to D's last layer.
    """

    def __init__(self, discriminator: nn.Module, num_kernels: int = 50, kernel_dim: int = 5):
        require(num_kernels >= 1 and kernel_dim >= 1, "MinibatchDiscrimination.num_kernels/kernel_dim",
                (num_kernels, kernel_dim), "integers >= 1")
        super().__init__(discriminator, num_kernels)
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim
        # Salimans et al.'s code initialises T with N(0, 0.05^2).
        self.T = nn.Parameter(0.05 * torch.randn(self.feature_dim, num_kernels * kernel_dim))
        if parametrize.is_parametrized(self.head):  # a spectrally normalised D: T is a layer of it too
            spectral_norm(self, name="T")

    def batch_features(self, features: Tensor) -> Tensor:
        # In float32 whatever the precision: the sum below holds exp(0) = 1 for j = i, taken off afterwards,
        # and in bfloat16 (8 significant bits) that cancels a small closeness to the rest of the batch away.
        with torch.autocast(features.device.type, enabled=False):
            dtype = torch.promote_types(features.dtype, torch.float32)  # float64 stays float64
            M = features.to(dtype) @ self.T.to(dtype)
            # (kernel_dim, n, kernels), one contiguous slice per coordinate: summing |M_i - M_j| slice by slice
            # takes half the time of one (n, n, kernels, kernel_dim) difference reduced over its short last axis.
            # Broadcast rather than cdist: the gradient penalties differentiate this twice.
            M = M.view(-1, self.num_kernels, self.kernel_dim).permute(2, 0, 1).contiguous()
            l1 = sum((m.unsqueeze(1) - m.unsqueeze(0)).abs() for m in M)  # (n, n, kernels)
            closeness = torch.exp(-l1).sum(dim=1) - 1.0  # minus the j = i term
        return closeness.to(features.dtype)


class MinibatchStdDev(_FeatureLayer):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN, Sec. 3).

    The batch is split into groups of ``group_size``; in each group the
    standard deviation of every feature over the group is averaged into one
    number, appended to each member's features. A collapsed generator makes
    it near 0, which real batches never are.

    Simplified from ProGAN, which appends the number as a constant feature map before D's last
    convolution: here it joins D's flattened features at the linear head (for a DCGAN D, its last
    4x4 maps, so averaged over pixels as ProGAN's; for a ResNet D, its pooled features). So the head
    weighs it linearly, with no further layer to combine it with the features.
    """

    def __init__(self, discriminator: nn.Module, group_size: int = 4):
        require(isinstance(group_size, int) and group_size >= 2, "MinibatchStdDev.group_size", group_size,
                "an integer >= 2")
        super().__init__(discriminator, 1)
        self.group_size = group_size

    def batch_features(self, features: Tensor) -> Tensor:
        n = features.shape[0]
        group = min(self.group_size, n)
        if n % group:
            raise ConfigError(f"batch of {n} samples is not valid: expected a multiple of MinibatchStdDev.group_size="
                              f"{group} (data.batch_size, and model.generator_batch_size where set, must be a "
                              "multiple of group_size, or of pack x group_size where Packed feeds this D packs of "
                              "samples)")
        # ProGAN's grouping: sample i is in group i mod (n / group). In float32: under float16 the 1e-8 is 0,
        # and a collapsed group's sqrt(0) has an infinite gradient (NaN once multiplied by 0).
        grouped = features.float().view(group, n // group, -1)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # (n / group,)
        return std.repeat(group).unsqueeze(1).to(features.dtype)
