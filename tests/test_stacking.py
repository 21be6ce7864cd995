"""K seeds trained as one SeedStack do exactly what each seed's module does alone: the same weights,
batch-norm statistics, Adam state, losses, metrics and random-number stream, to the last bit."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from lit_gan.data.toy import sample_mixture
from lit_gan.nets import DCGANGenerator, MLPDiscriminator, MLPGenerator
from lit_gan.objectives import DRAGAN, LSGAN, WGAN, WGANGP, HingeGAN, MinimaxGAN, NonSaturatingGAN
from lit_gan.penalties import Penalty, R1Penalty
from lit_gan.stacking import NotStackable, SeedStack

GRID = torch.tensor([[x, y] for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)])
ADAM = {"lr_d": 1e-3, "lr_g": 1e-3, "betas_d": (0.5, 0.9), "betas_g": (0.5, 0.9)}


def toy_generator():  # configs/nets/mlp_generator_2d.yaml
    return MLPGenerator(latent_dim=16, width=128, depth=3, batch_norm=False)


def batch_norm_generator():  # the generator of configs/models/toy/r1_sharp.yaml
    return MLPGenerator(latent_dim=2, width=400, depth=4, batch_norm=True)


def toy_discriminator(**options):  # configs/nets/mlp_discriminator_2d.yaml
    return MLPDiscriminator(width=128, depth=3, **options)


# name: (objective, generator, discriminator, options, batch size); the networks of the shipped toy configs.
CASES = {
    "nonsaturating": (NonSaturatingGAN, toy_generator, toy_discriminator, {}, 100),
    "r1_batch_norm": (NonSaturatingGAN, batch_norm_generator, toy_discriminator,
                      {"penalties": [R1Penalty(weight=0.03)]}, 256),
    "wgan_gp_n_critic": (WGANGP, toy_generator, toy_discriminator, {"n_critic": 3}, 100),
    "dragan_maxout_instance_noise": (DRAGAN, toy_generator, lambda: toy_discriminator(activation="maxout"),
                                     {"instance_noise": 0.1, "instance_noise_steps": 3}, 100),
    "wgan_clipping": (WGAN, toy_generator, toy_discriminator, {"n_critic": 2, "clip_value": 0.05}, 64),
    "lsgan": (LSGAN, toy_generator, toy_discriminator, {}, 100),
    "hinge": (HingeGAN, toy_generator, toy_discriminator, {}, 100),
    "label_smoothing": (MinimaxGAN, toy_generator, toy_discriminator, {"real_label": 0.9}, 100),
}
SEEDS = (0, 1, 2)
ITERATIONS = 4


def build(name: str, seed: int):
    cls, generator, discriminator, options, _ = CASES[name]
    torch.manual_seed(seed)
    module = cls(generator(), discriminator(), **ADAM, **options)
    return module, tuple(module.configure_optimizers())


def real_batches(name: str, seed: int) -> list[torch.Tensor]:
    _, _, _, options, batch = CASES[name]
    stream = torch.Generator().manual_seed(100 + seed)
    return [sample_mixture(GRID, 0.05, batch, stream) for _ in range(ITERATIONS * options.get("n_critic", 1))]


def new_learning_rate(optimizers, iteration: int) -> None:
    """A schedule's move halfway through, so the stacked step must read the current learning rate."""
    if iteration == ITERATIONS // 2:
        for optimizer in optimizers:
            optimizer.param_groups[0]["lr"] = 3e-4


def train_alone(name: str, seed: int):
    """The module's own updates, as its training_step makes them, from the global generator's ``state``."""
    module, (opt_d, opt_g) = build(name, seed)
    module.direct_steps = True  # no Trainer here: plain backward() and optimizer steps
    batches, metrics = iter(real_batches(name, seed)), []
    torch.manual_seed(1000 + seed)
    for iteration in range(ITERATIONS):
        new_learning_rate((opt_d, opt_g), iteration)
        for _ in range(module.n_critic):
            real = next(batches)
            metrics.append(module.update_discriminator(real, LightningOptimizer(opt_d)))
        metrics.append(module.update_generator(real, LightningOptimizer(opt_g)))
        module.generator_step += 1
    return module, (opt_d, opt_g), metrics, torch.get_rng_state()


def train_stacked(name: str):
    built = [build(name, seed) for seed in SEEDS]
    modules, optimizers = [m for m, _ in built], [o for _, o in built]
    stack = SeedStack(modules, optimizers)
    generators = [torch.Generator().manual_seed(1000 + seed) for seed in SEEDS]
    batches = [iter(real_batches(name, seed)) for seed in SEEDS]
    metrics = [[] for _ in SEEDS]
    for iteration in range(ITERATIONS):
        for pair in optimizers:
            new_learning_rate(pair, iteration)
        for _ in range(modules[0].n_critic):
            real = torch.stack([next(b) for b in batches])
            for k, values in enumerate(stack.update_discriminator(real, generators)):
                metrics[k].append(values)
        for k, values in enumerate(stack.update_generator(real.shape[1], generators)):
            metrics[k].append(values)
        for module in modules:
            module.generator_step += 1
    return modules, optimizers, metrics, [g.get_state() for g in generators]


def assert_identical(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, where


@pytest.mark.parametrize("name", CASES)
def test_stacked_seeds_equal_their_own_runs_to_the_bit(name):
    modules, optimizers, metrics, rng_states = train_stacked(name)
    for k, seed in enumerate(SEEDS):
        alone, alone_optimizers, alone_metrics, alone_rng = train_alone(name, seed)
        assert_identical(modules[k].state_dict(), alone.state_dict(), f"seed {seed} module")
        for stacked_opt, own_opt in zip(optimizers[k], alone_optimizers):
            assert_identical(stacked_opt.state_dict(), own_opt.state_dict(), f"seed {seed} optimizer")
        assert_identical(metrics[k], alone_metrics, f"seed {seed} metrics")
        assert torch.equal(rng_states[k], alone_rng), f"seed {seed} drew other random numbers"
    fresh, _ = build(name, SEEDS[0])
    # Every weight matrix moved (a critic's output bias gets no gradient from the Wasserstein loss).
    moved = [not torch.equal(a, b) for a, b in zip(modules[0].parameters(), fresh.parameters()) if a.dim() == 2]
    assert all(moved), "training did not move every weight: the comparison would be vacuous"
    assert not torch.equal(modules[0].generator.net[0].weight, modules[1].generator.net[0].weight)


def test_each_module_keeps_training_alone_after_the_stack():
    """The modules' parameters and Adam state are views of the stack; a module stepping on its own
    afterwards (its optimizer lays it out anew) continues exactly as if it had never been stacked."""
    name, seed = "nonsaturating", SEEDS[1]
    modules, optimizers, _, rng_states = train_stacked(name)
    stacked, (opt_d, opt_g) = modules[1], optimizers[1]
    alone, (own_d, own_g), _, _ = train_alone(name, seed)
    stacked.direct_steps = alone.direct_steps = True
    real = real_batches(name, seed)[0]
    for module, d, g, state in ((stacked, opt_d, opt_g, rng_states[1]), (alone, own_d, own_g, rng_states[1])):
        torch.set_rng_state(state)
        module.update_discriminator(real, LightningOptimizer(d))
        module.update_generator(real, LightningOptimizer(g))
    assert_identical(stacked.state_dict(), alone.state_dict(), "module")
    assert_identical(opt_d.state_dict(), own_d.state_dict(), "optimizer")


class OwnPenalty(Penalty):
    """A user's penalty, written for one run: no seed dimension, no ``draws``."""

    def unweighted(self, discriminator, real, fake):
        return discriminator(real).pow(2).mean()


@pytest.mark.parametrize("case, message", [
    ({"discriminator": lambda: toy_discriminator(spectral_norm=True)}, "spectral norm"),
    ({"generator": lambda: DCGANGenerator(latent_dim=16, resolution=16, channels=1, width=8)}, "DCGANGenerator"),
    ({"options": {"feature_matching": True}}, "model.feature_matching=True"),
    ({"options": {"fused_adam": True}}, "model.fused_adam=True"),
    ({"options": {"unrolled_steps": 2}}, "model.unrolled_steps=2"),
    ({"options": {"generator_batch_size": 64}}, "model.generator_batch_size=64"),
    ({"options": {"penalties": [OwnPenalty()]}}, "penalty OwnPenalty is not one of lit_gan.penalties"),
])
def test_what_cannot_be_stacked_is_named(case, message):
    generator = case.get("generator", toy_generator)
    discriminator = case.get("discriminator", toy_discriminator)
    modules, optimizers = [], []
    for seed in SEEDS[:2]:
        torch.manual_seed(seed)
        module = NonSaturatingGAN(generator(), discriminator(), **ADAM, **case.get("options", {}))
        modules.append(module)
        optimizers.append(tuple(module.configure_optimizers()))
    with pytest.raises(NotStackable, match=message):
        SeedStack(modules, optimizers)


def test_runs_of_different_configs_are_not_stacked():
    first, first_opts = build("nonsaturating", 0)
    torch.manual_seed(1)
    other = NonSaturatingGAN(toy_generator(), toy_discriminator(), **{**ADAM, "lr_d": 2e-4})
    with pytest.raises(NotStackable, match="hyperparameters"):
        SeedStack([first, other], [first_opts, tuple(other.configure_optimizers())])


def test_networks_of_other_widths_are_not_stacked():
    # Same parameter names, other shapes: seed 1's wider layers were laid out in seed 0's slots, silently.
    first, first_opts = build("nonsaturating", 0)
    torch.manual_seed(1)
    other = NonSaturatingGAN(MLPGenerator(latent_dim=8, width=128, depth=3, batch_norm=False), toy_discriminator(),
                             **ADAM)
    assert dict(other.hparams) == dict(first.hparams)  # (the networks are not hyperparameters)
    with pytest.raises(NotStackable, match="model.generator differs between the runs"):
        SeedStack([first, other], [first_opts, tuple(other.configure_optimizers())])
    elu = NonSaturatingGAN(toy_generator(), toy_discriminator(activation="elu"), **ADAM)
    with pytest.raises(NotStackable, match="model.discriminator differs between the runs"):
        SeedStack([first, elu], [first_opts, tuple(elu.configure_optimizers())])


def test_the_seed_group_fingerprint_tells_configs_apart():
    """A seed group's members compare fingerprints: other networks, penalties or settings must change it."""
    from lit_gan.stacking import config_fingerprint

    base = config_fingerprint(build("nonsaturating", 0)[0])
    assert config_fingerprint(build("nonsaturating", 1)[0]) == base  # another seed: the same config
    variants = [
        NonSaturatingGAN(MLPGenerator(latent_dim=8, width=128, depth=3, batch_norm=False), toy_discriminator(), **ADAM),
        NonSaturatingGAN(toy_generator(), toy_discriminator(), **ADAM, penalties=[R1Penalty(weight=0.1)]),
        NonSaturatingGAN(toy_generator(), toy_discriminator(), **{**ADAM, "lr_g": 2e-4}),
        LSGAN(toy_generator(), toy_discriminator(), **ADAM),
        # Layers without weights: the same shapes, other functions (seed 1 ran seed 0's layers).
        NonSaturatingGAN(toy_generator(), toy_discriminator(activation="elu"), **ADAM),
        NonSaturatingGAN(MLPGenerator(latent_dim=16, width=128, depth=3, batch_norm=False, output_activation="tanh"),
                         toy_discriminator(), **ADAM),
    ]
    fingerprints = {config_fingerprint(module) for module in variants}
    assert len(fingerprints) == len(variants) and base not in fingerprints
    assert all(0 <= f < 2 ** 48 for f in fingerprints | {base})
