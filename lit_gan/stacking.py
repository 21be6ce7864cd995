"""Several seeds of one toy config trained as one batched computation, each seed's numbers its own run's.

Runs of one config that differ only in their seed do the same arithmetic on different numbers. A
:class:`SeedStack` lays each network's K copies along a new leading dimension, so one batched matrix
product serves every seed where K runs would each launch their own: on a CPU a toy MLP's step is
mostly per-operation overhead (docs/PERFORMANCE.md, "Several seeds in one process").

The K :class:`~lit_gan.objectives.GANModule` objects stay whole: their parameters, batch-norm
statistics and Adam moments become views into the stack, so each module's evaluation, EMA, checkpoints
and optimizer state see its own seed's values as the stack updates them.

No seed's arithmetic changes. Its losses and penalties are computed by its own module on its own slice,
and the sum over seeds is differentiated (the other seeds' terms do not touch its gradient); batch norm
keeps statistics per seed; Adam is element-wise (torch's own update over one buffer, as
:class:`~lit_gan.optim.ContiguousAdam`); each seed draws its random numbers from its own generator in
the order its run would (:class:`~lit_gan.draws.Draws`). On the CPU builds tested the results equal K
separate runs' to the last bit (tests/test_stacking.py). A layer with one output unit (D's head) runs
seed by seed: there a single seed's product takes a matrix-vector BLAS path that the batched one does
not, and rounds differently.

Supported: lit-gan's MLP generator and discriminator (linear layers, batch norm, maxout, element-wise
activations), every objective's losses, the R1, WGAN-GP and DRAGAN penalties, weight clipping, instance
noise, ``n_critic``, learning-rate decay and EMA (each module keeps its own), on a CPU in float32.
Anything else raises :class:`NotStackable`, naming it.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.adam import adam

from lit_gan.draws import Draws
from lit_gan.errors import ConfigError
from lit_gan.nets import Maxout, MLPDiscriminator, MLPGenerator
from lit_gan.optim import ContiguousAdam, step_dtype
from lit_gan.penalties import Penalty

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh)
# GANModule arguments whose remedies SeedStack does not run, with the value that leaves them off.
UNSUPPORTED_OPTIONS = {"feature_matching": False, "historical_averaging": 0.0, "unrolled_steps": 0, "fused_adam": False,
                       "generator_batch_size": None}


class NotStackable(ConfigError):
    """These runs cannot be trained as one stack; each trains on its own instead."""


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` for every seed: ``x`` is ``(K, batch, in)``, ``weight`` ``(K, out, in)``, ``bias`` ``(K, out)``."""
    if weight.shape[1] == 1:  # one output: a seed's own product is a matrix-vector one (see the module docstring)
        return torch.stack([F.linear(x[k], weight[k], None if bias is None else bias[k]) for k in range(len(x))])
    weight = weight.transpose(1, 2)
    return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)


def parameter_views(parameters: Iterable[Tensor], flat: Tensor, seeds: int) -> list[Tensor]:
    """The ``(K, *shape)`` view of each of a network's ``parameters`` in ``flat``, which holds them parameter by
    parameter and, within one, seed by seed (K = ``seeds``)."""
    views, offset = [], 0
    for parameter in parameters:
        views.append(flat[offset:offset + seeds * parameter.numel()].view(seeds, *parameter.shape))
        offset += seeds * parameter.numel()
    return views


def stacked_size(network: nn.Module, seeds: int) -> int:
    """The length of the flat buffer that holds ``seeds`` copies of ``network``'s parameters."""
    return seeds * sum(p.numel() for p in network.parameters())


def bind(network: nn.Module, slot: int, flat: Tensor, buffers: dict[str, Tensor], seeds: int) -> None:
    """Make ``network``'s parameters and buffers views of slot ``slot`` of the stacked tensors."""
    for parameter, view in zip(network.parameters(), parameter_views(network.parameters(), flat, seeds)):
        parameter.data = view[slot]
    for name, buffer in network.named_buffers():
        buffer.data = buffers[name][slot]


def write_slot(network: nn.Module, slot: int, flat: Tensor, buffers: dict[str, Tensor], seeds: int) -> None:
    """Copy ``network``'s parameters and buffers into slot ``slot`` of the stacked tensors, then :func:`bind` it."""
    with torch.no_grad():
        for parameter, view in zip(network.parameters(), parameter_views(network.parameters(), flat, seeds)):
            view[slot].copy_(parameter)
        for name, buffer in network.named_buffers():
            buffers[name][slot].copy_(buffer)
    bind(network, slot, flat, buffers, seeds)


def layers(network: nn.Module) -> list[nn.Module]:
    """The layers of a lit-gan MLP in the order its forward applies them."""
    return list(network.net) if isinstance(network, MLPGenerator) else [*network.body, network.head]


def check_network(network: nn.Module, role: str) -> None:
    """Raise :class:`NotStackable` unless :class:`StackedNetwork` can run ``network`` (``model.ROLE``)."""
    if type(network) not in (MLPGenerator, MLPDiscriminator):
        raise NotStackable(f"model.{role}={type(network).__name__} cannot be stacked: expected "
                           "lit_gan.nets.MLPGenerator or MLPDiscriminator")
    if any(parametrize.is_parametrized(m) for m in network.modules()):
        raise NotStackable(f"model.{role} has parametrized layers (spectral norm), which cannot be stacked")
    for layer in layers(network):
        if isinstance(layer, nn.BatchNorm1d):
            if layer.momentum is None or not (layer.affine and layer.track_running_stats):
                raise NotStackable(f"model.{role} has a batch norm without momentum, affine or running statistics")
        elif not isinstance(layer, (nn.Linear, Maxout, nn.Flatten, *ELEMENTWISE)):
            raise NotStackable(f"model.{role} has a {type(layer).__name__} layer, which cannot be stacked")
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in network.parameters()):
        raise NotStackable(f"model.{role} is not float32 on a CPU, the only place stacking is tested exact")


def check_stackable(module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Raise :class:`NotStackable`, naming the reason, unless runs of ``module`` (with its ``(D, G)``
    optimizers) can be trained as one :class:`SeedStack`."""
    for key, off in UNSUPPORTED_OPTIONS.items():
        if module.hparams.get(key, off) != off:
            raise NotStackable(f"model.{key}={module.hparams[key]!r} cannot be stacked (only {off!r})")
    for penalty in module.penalties:
        # A stack hands penalties a seed dimension and each seed's own draws; lit-gan's are written for that.
        if type(penalty).__module__ != Penalty.__module__:
            raise NotStackable(f"penalty {type(penalty).__qualname__} is not one of lit_gan.penalties: a stack "
                               "passes inputs with a seed dimension and a Draws per seed, which it may not handle")
    check_network(module.discriminator, "discriminator")
    check_network(module.generator, "generator")
    for optimizer, role in zip(optimizers, ("discriminator", "generator")):
        check_adam(optimizer, role)


def weight_shapes(network: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Every weight and buffer of ``network`` by name, shape and dtype: what copies must share to be stacked
    (the same names alone let a wider copy be laid out in a narrower one's slot)."""
    return [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in network.state_dict().items()]


def config_fingerprint(module) -> int:
    """48 bits (exact in a float64) of what runs must share to be stacked: objective, hyperparameters,
    penalties and the networks: their weight shapes and every layer with its settings (activations and
    their slopes, batch norm's eps and momentum, G's output activation hold no weights)."""
    config = (type(module).__qualname__, sorted(module.settings().items()), weight_shapes(module),
              repr(module.generator), repr(module.discriminator))
    return int(hashlib.sha256(repr(config).encode()).hexdigest()[:12], 16)


class StackedNetwork:
    """K copies of one lit-gan MLP as one network over inputs ``(K, batch, ...)``.

    Each copy's parameters and buffers become views of its slice of the stacked tensors; the
    parameters of all copies lie in one buffer (:attr:`flat`, see :func:`parameter_views`), which
    :class:`StackedAdam` updates in one call. Given ``flat`` and ``buffers`` (shared memory, say),
    the stack uses them as they are: every copy's values must be in its slot already (:func:`write_slot`).
    """

    def __init__(self, copies: Sequence[nn.Module], role: str, flat: Tensor | None = None,
                 buffers: dict[str, Tensor] | None = None):
        first = copies[0]
        for network in copies:
            check_network(network, role)
            if repr(network) != repr(first) or weight_shapes(network) != weight_shapes(first):  # layers, settings
                raise NotStackable(f"model.{role} differs between the runs: a stack needs one architecture")
        self.first = first
        self.layers = layers(first)
        seeds = len(copies)
        if flat is None:
            flat = torch.empty(stacked_size(first, seeds))
            buffers = {name: torch.stack([dict(n.named_buffers())[name].detach() for n in copies])
                       for name, _ in first.named_buffers()}
            for k, network in enumerate(copies):
                write_slot(network, k, flat, buffers, seeds)
        else:
            for k, network in enumerate(copies):
                bind(network, k, flat, buffers, seeds)
        self.flat = flat
        names = [name for name, _ in first.named_parameters()]
        self.stacked = {**dict(zip(names, (v.requires_grad_() for v in parameter_views(first.parameters(), flat, seeds)))),
                        **buffers}  # name -> (K, *shape)
        self.names = {layer: name for name, layer in first.named_modules()}

    def parameters(self) -> list[Tensor]:
        return [self.stacked[name] for name, _ in self.first.named_parameters()]

    def requires_grad_(self, flag: bool) -> None:
        for tensor in self.parameters():
            tensor.requires_grad_(flag)

    def _get(self, layer: nn.Module, name: str) -> Tensor | None:
        return self.stacked.get(f"{self.names[layer]}.{name}")

    def _apply(self, layer: nn.Module, x: Tensor) -> Tensor:
        if isinstance(layer, nn.Linear):
            return linear(x, self._get(layer, "weight"), self._get(layer, "bias"))
        if isinstance(layer, Maxout):
            return self._apply(layer.linear, x).unflatten(-1, (-1, layer.pieces)).amax(-1)
        if isinstance(layer, nn.Flatten):
            return x.flatten(2)
        if isinstance(layer, nn.BatchNorm1d):
            return self._batch_norm(layer, x)
        return layer(x)  # element-wise, the same for every seed

    def _batch_norm(self, layer: nn.BatchNorm1d, x: Tensor) -> Tensor:
        """``layer`` for every seed: the seeds' features side by side as one batch norm's channels."""
        seeds, batch, features = x.shape
        if layer.training:  # as nn.BatchNorm1d.forward counts batches (momentum is set: see _check)
            self._get(layer, "num_batches_tracked").add_(1)
        flat = lambda name: self._get(layer, name).view(-1)  # noqa: E731
        y = F.batch_norm(x.transpose(0, 1).reshape(batch, seeds * features), flat("running_mean"),
                         flat("running_var"), flat("weight"), flat("bias"), layer.training, layer.momentum, layer.eps)
        return y.view(batch, seeds, features).transpose(0, 1)

    def features(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self._apply(layer, x)
        return x

    def __call__(self, x: Tensor) -> Tensor:
        if isinstance(self.first, MLPGenerator):
            for layer in self.layers:
                x = self._apply(layer, x)
            return x.view(*x.shape[:2], *self.first.output_shape)
        return self._apply(self.layers[-1], self.features(x)).squeeze(-1)


def bind_adam(optimizer: torch.optim.Optimizer, slot: int, moments: tuple, seeds: int, write: bool) -> None:
    """Make ``optimizer``'s state (one network's parameters) views of slot ``slot`` of ``moments``
    (``exp_avg``, ``exp_avg_sq`` laid out as the parameters' ``flat``; ``steps``, one count per seed),
    copying its current state in first when ``write``."""
    exp_avg, exp_avg_sq, steps = moments
    step = steps[slot]
    if write:
        step.fill_(adam_step(optimizer))
    params = optimizer.param_groups[0]["params"]
    views = [[view[slot] for view in parameter_views(params, buffer, seeds)] for buffer in (exp_avg, exp_avg_sq)]
    for parameter, m, v in zip(params, *views):
        state = optimizer.state.get(parameter)
        if write and state:
            m.copy_(state["exp_avg"])
            v.copy_(state["exp_avg_sq"])
        optimizer.state[parameter] = {"step": step, "exp_avg": m, "exp_avg_sq": v}
    optimizer._layouts.clear()  # its own layout, if any, no longer holds the parameters


def check_adam(optimizer: torch.optim.Optimizer, role: str) -> None:
    if type(optimizer) is not ContiguousAdam or len(optimizer.param_groups) != 1:
        raise NotStackable(f"the {role} optimizer is {type(optimizer).__name__} with "
                           f"{len(optimizer.param_groups)} groups: stacking takes lit-gan's ContiguousAdam "
                           "with one group (model.fused_adam: false)")
    if optimizer.param_groups[0]["amsgrad"]:
        raise NotStackable(f"the {role} optimizer uses amsgrad, which stacking does not run")


def adam_step(optimizer: torch.optim.Optimizer) -> float:
    """The number of steps ``optimizer`` has taken (0 before its first); they must agree to stack."""
    steps = {float(s["step"]) for s in optimizer.state.values() if "step" in s}
    if len(steps) > 1:
        raise NotStackable(f"an optimizer's parameters are at different steps {sorted(steps)}")
    return steps.pop() if steps else 0.0


class StackedAdam:
    """The K seeds' Adams of one network as one update over :attr:`StackedNetwork.flat`.

    Takes over each seed's optimizer state (their step counts must agree) and leaves it as views of
    its own buffers, so each optimizer's ``state_dict`` (checkpoints) stays the seed's own. Given
    ``moments`` (``exp_avg``, ``exp_avg_sq`` laid out as ``flat``, and ``steps``, one count per seed), it uses
    them as they are.
    """

    def __init__(self, network: StackedNetwork, optimizers: Sequence[torch.optim.Optimizer], role: str,
                 moments: tuple | None = None):
        for optimizer in optimizers:
            check_adam(optimizer, role)
        self.optimizers, self.network = list(optimizers), network
        seeds = len(optimizers)
        taken_over = moments is None
        if taken_over:
            steps = {adam_step(o) for o in optimizers}
            if len(steps) > 1:
                raise NotStackable(f"the {role} optimizers are at different steps: {sorted(steps)}")
            moments = (torch.zeros_like(network.flat), torch.zeros_like(network.flat),
                       torch.zeros(seeds, dtype=step_dtype()))
        self.exp_avg, self.exp_avg_sq, self.steps = moments
        for k, optimizer in enumerate(optimizers):
            bind_adam(optimizer, k, moments, seeds, write=taken_over)

    @torch.no_grad()
    def update(self) -> None:
        """One Adam step of every seed, with the hyperparameters their optimizers hold now (schedulers move lr)."""
        group = self.optimizers[0].param_groups[0]
        if any(o.param_groups[0]["lr"] != group["lr"] for o in self.optimizers):
            raise NotStackable("the seeds' learning rates differ: a stack needs one schedule")
        grad = torch.cat([p.grad.reshape(-1) for p in self.network.parameters()])
        beta1, beta2 = group["betas"]
        decoupled = {k: group[k] for k in ("decoupled_weight_decay",) if k in group}  # torch >= 2.7
        adam([self.network.flat], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.steps[0]], foreach=False,
             amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
             eps=group["eps"], maximize=group["maximize"], **decoupled)
        self.steps[1:] = self.steps[0]  # every seed's count (its optimizer's state) took the same step

    def zero_grad(self) -> None:
        for p in self.network.parameters():
            p.grad = None


class SeedStack:
    """The discriminator and generator updates of K runs of one config, as one computation.

    ``modules`` are the runs' GANModules (one class, one set of hyperparameters), ``optimizers`` their
    ``(D, G)`` optimizers. :meth:`update_discriminator` and :meth:`update_generator` do what each
    module's own ``update_discriminator`` / ``update_generator`` does, for all of them at once, with
    seed ``k``'s random numbers drawn from ``generators[k]`` (keep these two in step with GANModule's;
    tests/test_stacking.py compares them to the bit). The caller keeps each module's clock, EMA and
    learning-rate schedule, as its ``training_step`` does.
    """

    def __init__(self, modules: Sequence, optimizers: Sequence[tuple[torch.optim.Optimizer, torch.optim.Optimizer]],
                 storage: dict[str, tuple] | None = None):
        first = modules[0]
        for module in modules:
            if type(module) is not type(first) or module.settings() != first.settings():
                raise NotStackable("the runs differ in objective, hyperparameters or penalties: a stack needs one "
                                   "config")
        check_stackable(first, optimizers[0])
        self.modules = list(modules)
        # storage: role -> (flat, buffers, (exp_avg, exp_avg_sq, steps)) to use as they are (lit_gan.seed_group).
        flat, buffers, moments = (storage or {}).get("discriminator", (None, None, None))
        self.discriminator = StackedNetwork([m.discriminator for m in modules], "discriminator", flat, buffers)
        self.adam_d = StackedAdam(self.discriminator, [d for d, _ in optimizers], "discriminator", moments)
        flat, buffers, moments = (storage or {}).get("generator", (None, None, None))
        self.generator = StackedNetwork([m.generator for m in modules], "generator", flat, buffers)
        self.adam_g = StackedAdam(self.generator, [g for _, g in optimizers], "generator", moments)

    def _with_instance_noise(self, x: Tensor, draws: Draws) -> Tensor:
        # The modules share their hyperparameters and clock, so the first speaks for all.
        return self.modules[0].with_instance_noise(x, draws)

    def update_discriminator(self, real: Tensor, generators: Sequence[torch.Generator],
                             measure: bool = True) -> list[dict[str, Tensor]]:
        """One D step of every seed on ``real`` ``(K, batch, ...)``; each seed's losses (and metrics)."""
        first, draws = self.modules[0], Draws(generators)
        with torch.no_grad():
            fake = self.generator(first.sample_noise(real.shape[1], draws))
        real, fake = self._with_instance_noise(real, draws), self._with_instance_noise(fake, draws)
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        losses = [m.discriminator_loss(r, f) for m, r, f in zip(self.modules, real_logits, fake_logits)]
        penalties = {f"penalty/{p.name}": p(self.discriminator, real, fake, draws) for p in first.penalties}
        # As GANModule adds them: loss + (0 + penalty_1 + ...), seed by seed.
        totals = [loss + sum(p[k] for p in penalties.values()) if penalties else loss for k, loss in enumerate(losses)]
        self.adam_d.zero_grad()
        torch.stack(totals).sum().backward()
        self.adam_d.update()
        for module in self.modules:
            module.after_discriminator_step()
        results = []
        for k, (module, loss) in enumerate(zip(self.modules, losses)):
            values = {"loss/discriminator": loss.detach(), **{name: p[k].detach() for name, p in penalties.items()}}
            if measure:
                grad_norm = torch.nn.utils.get_total_norm([p.grad[k] for p in self.discriminator.parameters()])
                values.update(module.discriminator_step_metrics(real_logits[k].detach(), fake_logits[k].detach(),
                                                                grad_norm))
            results.append(values)
        return results

    def update_generator(self, batch_size: int, generators: Sequence[torch.Generator],
                         measure: bool = True) -> list[dict[str, Tensor]]:
        """One G step of every seed on ``batch_size`` latents each; each seed's loss (and metrics)."""
        first, draws = self.modules[0], Draws(generators)
        fake = self.generator(first.sample_noise(batch_size, draws))
        self.discriminator.requires_grad_(False)
        try:
            logits = self.discriminator(self._with_instance_noise(fake, draws))
        finally:
            self.discriminator.requires_grad_(True)
        losses = [m.generator_loss(f) for m, f in zip(self.modules, logits)]
        self.adam_g.zero_grad()
        torch.stack(losses).sum().backward()
        self.adam_g.update()
        results = []
        for k, (module, loss) in enumerate(zip(self.modules, losses)):
            values = {"loss/generator": loss.detach()}
            if measure:
                values["grad_norm/generator"] = torch.nn.utils.get_total_norm(
                    [p.grad[k] for p in self.generator.parameters()])
                values["lr/generator"] = torch.tensor(self.adam_g.optimizers[k].param_groups[0]["lr"])
            results.append(values)
        return results
