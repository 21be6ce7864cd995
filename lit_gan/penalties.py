"""Discriminator regularisers as small composable objects.

Every penalty is called as ``penalty(discriminator, real, fake)`` inside the
discriminator update and returns the weighted term to add to D's loss, so an
objective takes any list of them (``penalties:`` in a config) and the training
step never branches on which ones are present.

Penalties also serve K seeds trained as one stack (:mod:`lit_gan.stacking`): given
inputs with a leading seed dimension, a stacked discriminator and ``Draws`` with one
generator per seed, they return one value per seed. So every mean is over the last
(sample) dimension and every random draw goes through ``draws``.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from lit_gan.draws import GLOBAL, Draws
from lit_gan.errors import plain, require


def differentiable_grad(output: Tensor, inputs, scaler=None) -> tuple[Tensor, ...]:
    """``torch.autograd.grad(output, inputs)``, kept in the graph for a second backward. Under ``16-mixed``
    pass the ``GradScaler``: the gradient is taken of the scaled output (so float16 intermediates do not
    underflow) and unscaled, as in PyTorch's AMP recipe for gradient penalties."""
    if scaler is None:
        return torch.autograd.grad(output, inputs, create_graph=True)
    inverse = 1.0 / scaler.get_scale()  # read once (a host sync), not once per gradient tensor
    return tuple(g * inverse for g in torch.autograd.grad(scaler.scale(output), inputs, create_graph=True))


def input_gradient_norm(discriminator: nn.Module, inputs: Tensor, scaler=None) -> Tensor:
    """L2 norm of dD/dx per output of D at ``inputs``, kept in the graph for a second backward.

    One output per sample normally; with PacGAN packing one per pack of
    consecutive samples, whose gradients form the packed input's gradient.
    """
    inputs = inputs.detach().requires_grad_(True)
    outputs = discriminator(inputs)
    (gradient,) = differentiable_grad(outputs.float().sum(), inputs, scaler)
    return gradient.float().reshape(*outputs.shape, -1).norm(2, dim=-1)


def two_sided(discriminator: nn.Module, points: Tensor, target: float, scaler=None) -> Tensor:
    """``E[(||grad D(x)||_2 - target)^2]`` over ``points``: the shape shared by WGAN-GP's and DRAGAN's penalties."""
    return ((input_gradient_norm(discriminator, points, scaler) - target) ** 2).mean(-1)


class Penalty:
    """Base class: ``weight`` times a non-negative regulariser of D."""

    name = "penalty"
    scaler = None  # the GradScaler under 16-mixed precision; set by GANModule when training starts

    def __init__(self, weight: float = 10.0):
        require(weight >= 0, f"{type(self).__name__}.weight", weight, "a number >= 0")
        self.weight = plain(weight)  # its repr is compared on resume, and a NumPy scalar's reads np.float32(...)

    def __call__(self, discriminator: nn.Module, real: Tensor, fake: Tensor, draws: Draws = GLOBAL) -> Tensor:
        # One run's penalty may leave ``draws`` out of its signature (only a seed stack passes other draws,
        # and stacks take lit-gan's own penalties only).
        if draws is GLOBAL:
            return self.weight * self.unweighted(discriminator, real, fake)
        return self.weight * self.unweighted(discriminator, real, fake, draws)

    def unweighted(self, discriminator: nn.Module, real: Tensor, fake: Tensor, draws: Draws = GLOBAL) -> Tensor:
        """The regulariser; a penalty of one's own may define it as ``unweighted(self, discriminator, real, fake)``
        and draw from torch's global generator (then it trains runs alone, not as a seed stack)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        # What a resume compares with its checkpoint's penalties: the weight and every other constructor
        # argument (stored under its own name) that is not at its default, so that a checkpoint written when
        # this showed the weight alone still matches a penalty at its defaults.
        parameters = list(inspect.signature(type(self).__init__).parameters.values())[1:]
        others = [f"{p.name}={getattr(self, p.name)!r}" for p in parameters
                  if p.name != "weight" and hasattr(self, p.name) and getattr(self, p.name) != p.default]
        return f"{type(self).__name__}({', '.join([f'weight={self.weight!r}', *others])})"


class GradientPenalty(Penalty):
    """Two-sided gradient penalty of WGAN-GP (Gulrajani et al. 2017, Eq. 3).

    ``weight * E[(||grad D(x_hat)||_2 - target)^2]`` with ``x_hat`` drawn
    uniformly on straight lines between real and generated samples.
    """

    name = "gradient_penalty"

    def __init__(self, weight: float = 10.0, target: float = 1.0):
        super().__init__(weight)
        require(target > 0, "GradientPenalty.target", target, "a number > 0")
        self.target = plain(target)

    def unweighted(self, discriminator, real, fake, draws=GLOBAL):
        alpha = draws.rand(draws.per_sample(real), dtype=real.dtype, device=real.device)
        interpolates = alpha * real.detach() + (1 - alpha) * fake.detach()
        return two_sided(discriminator, interpolates, self.target, self.scaler)


class DRAGANPenalty(Penalty):
    """DRAGAN's local gradient penalty (Kodali et al. 2017, Eq. 1 / Algorithm 1).

    ``weight * E[(||grad D(x_hat)||_2 - 1)^2]`` around the real data only:
    ``x_hat = x + alpha * delta`` with ``delta = perturbation * std(x) * U[0, 1)``
    per coordinate and ``alpha ~ U[0, 1)`` per sample, as in the authors' code. That
    perturbation is one-sided (every coordinate moves up), where Eq. 1 writes a
    zero-mean ``delta ~ N(0, cI)``.
    """

    name = "dragan_penalty"

    def __init__(self, weight: float = 10.0, perturbation: float = 0.5):
        super().__init__(weight)
        require(perturbation > 0, "DRAGANPenalty.perturbation", perturbation, "a number > 0")
        self.perturbation = plain(perturbation)

    def unweighted(self, discriminator, real, fake, draws=GLOBAL):
        real = real.detach()
        sample_dims = real.dim() - draws.seed_dims
        std = real.flatten(draws.seed_dims).std(-1).reshape(real.shape[:draws.seed_dims] + (1,) * sample_dims)
        delta = self.perturbation * std * draws.rand(real.shape[draws.seed_dims:], dtype=real.dtype, device=real.device)
        perturbed = real + draws.rand(draws.per_sample(real), dtype=real.dtype, device=real.device) * delta
        return two_sided(discriminator, perturbed, 1.0, self.scaler)


class R1Penalty(Penalty):
    """R1 regulariser (Mescheder et al. 2018, Eq. 9): ``gamma/2 * E_real[||grad D(x)||^2]``.

    ``weight`` is gamma; the 1/2 of the paper is applied here.
    """

    name = "r1_penalty"

    def unweighted(self, discriminator, real, fake, draws=GLOBAL):
        return 0.5 * (input_gradient_norm(discriminator, real, self.scaler) ** 2).mean(-1)
