"""Training-side remedies for unstable GANs, used by :class:`lit_gan.objectives.GANModule`.

Each is switched on by one argument of the module (see its docstring); the
discriminator-side ones (PacGAN packing, minibatch discrimination, minibatch
stddev) are networks in :mod:`lit_gan.nets.minibatch`.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_gan.penalties import differentiable_grad


class HistoricalAverage(nn.Module):
    """Historical averaging (Salimans et al. 2016, Sec. 3.3): ``||theta - (1/t) sum_i theta[i]||^2``.

    Holds the running mean of a network's parameters over every value they
    have had (the initial one included); :meth:`penalty` is 0 exactly at that
    mean. The mean lives in buffers, so it is saved in checkpoints.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.register_buffer("count", torch.ones((), dtype=torch.long))  # saved in checkpoints
        self.host_count = 1  # ``count`` on the host: reading the buffer every step would wait for the GPU
        self.register_load_state_dict_post_hook(read_count)
        for i, parameter in enumerate(network.parameters()):
            self.register_buffer(f"mean_{i}", parameter.detach().clone())

    def means(self) -> list[Tensor]:
        return [buffer for name, buffer in self.named_buffers() if name.startswith("mean_")]

    def penalty(self, network: nn.Module) -> Tensor:
        return sum(((p - m) ** 2).sum() for p, m in zip(network.parameters(), self.means()))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        self.count += 1
        self.host_count += 1
        torch._foreach_lerp_(self.means(), [p.detach() for p in network.parameters()], 1.0 / self.host_count)


def read_count(average: HistoricalAverage, incompatible_keys) -> None:
    """After ``load_state_dict``: the host's count is the loaded one (read once, not every step)."""
    average.host_count = int(average.count)


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` that :func:`update_ema` keeps as its moving average."""
    return copy.deepcopy(generator).requires_grad_(False)


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * generator`` for parameters; buffers (batch-norm statistics) are copied.

    The exponential moving average of G's weights (Yazıcı et al. 2019); ``decay=0`` copies G.
    """
    ema_params, params = list(ema.parameters()), [p.detach() for p in generator.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)


@torch.no_grad()
def recompute_batch_norm(network: nn.Module, noise: Tensor, batch_size: int) -> None:
    """Set ``network``'s batch-norm statistics to its own, averaged over ``noise`` in batches of ``batch_size``.

    The moving average of G copies G's statistics, which belong to G's weights, not to the averaged ones;
    as for SWA (Izmailov et al. 2018, Sec. 3.2: ``torch.optim.swa_utils.update_bn``, used here) the averaged
    network's own statistics are recomputed before it is evaluated. Nothing happens without batch norm.
    """
    torch.optim.swa_utils.update_bn(noise.split(batch_size), network, device=noise.device)  # keeps train/eval mode


def annealed_std(initial: float, step: int, anneal_steps: int) -> float:
    """Instance noise's standard deviation at generator iteration ``step``: linear from ``initial`` to 0."""
    return initial * max(0.0, 1.0 - step / anneal_steps)


def unrolled_discriminator(
    discriminator: nn.Module,
    optimizer: torch.optim.Adam,
    loss_fn: Callable[[Callable[[Tensor], Tensor]], Tensor],
    steps: int,
    scaler=None,
) -> Callable[[Tensor], Tensor]:
    """D as it would be after ``steps`` differentiable Adam updates (Metz et al. 2017, Eq. 6-7).

    ``loss_fn(d)`` is D's loss with ``d`` standing for the discriminator; the
    updates keep the autograd graph (``create_graph``), so a generator loss
    computed with the returned function differentiates through how D would
    react to G (the second term of the paper's Eq. 12). The updates start from
    D's Adam state and hyperparameters; D's own parameters, buffers and
    optimizer state are left untouched (buffers are copied for the look-ahead).
    Adam's epsilon sits inside the square root so the second derivative stays
    finite where a gradient is exactly 0. Under ``16-mixed`` pass the
    ``GradScaler``: each look-ahead gradient is taken of the scaled loss and
    unscaled (PyTorch's AMP recipe), or float16 intermediates underflow to 0
    and the look-ahead stands still.
    """
    names = [name for name, _ in discriminator.named_parameters()]
    originals = [p for _, p in discriminator.named_parameters()]
    params = [p.detach().requires_grad_(True) for p in originals]
    buffers = {name: b.clone() for name, b in discriminator.named_buffers()}
    group = optimizer.param_groups[0]
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    moments = []
    for p in originals:
        state = optimizer.state.get(p, {})
        moments.append((
            state["exp_avg"].detach() if "exp_avg" in state else torch.zeros_like(p),
            state["exp_avg_sq"].detach() if "exp_avg_sq" in state else torch.zeros_like(p),
            float(state["step"]) if "step" in state else 0.0,
        ))

    def discriminator_with(values: list[Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda x: functional_call(discriminator, {**dict(zip(names, values)), **buffers}, (x,))

    for _ in range(steps):
        grads = differentiable_grad(loss_fn(discriminator_with(params)), params, scaler)
        updated, new_moments = [], []
        for p, g, (m, v, t) in zip(params, grads, moments):
            t += 1
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            step = lr * (m / (1 - beta1**t)) / torch.sqrt(v / (1 - beta2**t) + eps**2)
            updated.append(p - step)
            new_moments.append((m, v, t))
        params, moments = updated, new_moments
    return discriminator_with(params)
