"""Each remedy for mode collapse changes exactly what it should, and nothing else."""

from __future__ import annotations

import copy
import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_gan.callbacks import Evaluation, run_directory
from lit_gan.callbacks.output import find_callback
from lit_gan.cli import main
from lit_gan.data import GridGaussians
from lit_gan.errors import ConfigError
from lit_gan.nets import (
    DCGANDiscriminator,
    MinibatchDiscrimination,
    MinibatchStdDev,
    MLPDiscriminator,
    MLPGenerator,
    Packed,
    ResNetDiscriminator,
)
from lit_gan.objectives import DRAGAN, WGAN, WGANGP, NonSaturatingGAN, optimizer_steps
from lit_gan.penalties import GradientPenalty, R1Penalty
from lit_gan.stabilizers import (HistoricalAverage, annealed_std, make_ema, recompute_batch_norm,
                                unrolled_discriminator, update_ema)
from tests.conftest import quiet_args


class Recording(MLPDiscriminator):
    """An MLP discriminator that remembers the inputs it was given."""

    def features(self, x):
        self.seen = x
        return super().features(x)


def small_module(**kwargs) -> NonSaturatingGAN:
    generator = MLPGenerator(latent_dim=4, width=16, depth=2, batch_norm=False)
    discriminator = kwargs.pop("discriminator", None) or MLPDiscriminator(width=16, depth=2)
    return NonSaturatingGAN(generator, discriminator, lr_d=1e-3, lr_g=1e-3, **kwargs)


def fit(module: NonSaturatingGAN, iterations: int, tmp_path, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=optimizer_steps(iterations, module.n_critic), logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=list(callbacks))
    trainer.fit(module, GridGaussians(batch_size=16, seed=0))
    return trainer


# ------------------------------------------------------------------ PacGAN packing
def test_packing_gives_d_pack_times_the_channels_of_consecutive_samples():
    inner = Recording(input_shape=(4,), width=8, depth=1)
    x = torch.randn(6, 2)
    out = Packed(inner, pack=2)(x)
    assert out.shape == (3,)
    assert inner.seen.shape == (3, 4)
    torch.testing.assert_close(inner.seen[1], torch.cat([x[2], x[3]]))

    images = torch.randn(8, 3, 8, 8)
    conv = DCGANDiscriminator(resolution=8, channels=9, width=8)
    packed = Packed(conv, pack=3)
    assert packed.input_shape == (3, 8, 8)
    with pytest.raises(ConfigError, match=r"batch of 8 samples .* multiple of Packed.pack=3"):
        packed(images)
    assert packed(torch.randn(9, 3, 8, 8)).shape == (3,)


def test_packing_rejects_a_discriminator_built_for_the_wrong_channels():
    with pytest.raises(ConfigError, match=r"Packed.discriminator.input_shape=\[3\].*divisible by pack=2"):
        Packed(MLPDiscriminator(input_shape=(3,)), pack=2)
    packed = Packed(MLPDiscriminator(input_shape=(4,)), pack=2)  # built for 2-channel data
    with pytest.raises(ConfigError, match=r"expected pack x the data's shape \[3\], i.e. \[6\]"):
        packed(torch.randn(4, 3))


def test_gradient_penalties_of_a_packed_discriminator_take_one_norm_per_pack():
    torch.manual_seed(0)
    packed = Packed(MLPDiscriminator(input_shape=(4,), width=16, depth=2), pack=2)
    real = torch.randn(8, 2)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(packed(x).sum(), x)
    expected = 0.5 * (grad.reshape(4, 4).norm(dim=1) ** 2).mean()  # R1 over the 4 packed inputs
    torch.testing.assert_close(R1Penalty(1.0)(packed, real, real), expected)
    fake = torch.randn(8, 2)
    torch.manual_seed(1)
    alpha = torch.rand(8, 1)  # one per sample, as in an unpacked D
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(packed(x_hat).sum(), x_hat)
    expected = 10.0 * ((grad.reshape(4, 4).norm(dim=1) - 1) ** 2).mean()  # WGAN-GP over the 4 packed inputs
    torch.manual_seed(1)
    torch.testing.assert_close(GradientPenalty(10.0)(packed, real, fake), expected)


# --------------------------------------------------------- minibatch discrimination
def test_minibatch_discrimination_makes_each_output_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    d = MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2), num_kernels=7, kernel_dim=3)
    assert d.head.in_features == 16 + 7 and d.discriminator.head is None
    x = torch.randn(5, 2)
    changed = x.clone()
    changed[4] += 3.0
    assert not torch.allclose(d(x)[:4], d(changed)[:4])  # sample 4 moved, the others' outputs moved
    features = d.features(x)
    same = d.batch_features(features[:1].expand(6, -1))  # six identical samples: 5 neighbours at distance 0
    torch.testing.assert_close(same, torch.full((6, 7), 5.0))


def test_minibatch_discrimination_under_bfloat16_keeps_small_closeness():
    # The sum over j holds exp(0) = 1 for j = i; taken off after a bfloat16 sum it cancelled a closeness of
    # 0.01 to 0.0078 or 0.0156 (8 significant bits near 1). It is computed in float32 now.
    torch.manual_seed(0)
    d = MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2), num_kernels=8, kernel_dim=5)
    features = torch.randn(32, 16).bfloat16().float()  # exact in bfloat16, so both runs see the same inputs
    with torch.no_grad():
        d.T.copy_(d.T.bfloat16().float() * 8)  # T exact in bfloat16 too; samples far apart: closeness 0.01-0.2
        exact = d.double().batch_features(features.double())
        d.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = d.batch_features(features.bfloat16())
    assert mixed.dtype == torch.bfloat16
    assert 0.005 < exact.median() < 0.5
    relative = ((mixed.double() - exact) / exact).abs()
    assert relative.median() < 0.005 and relative.max() < 0.02  # were 1.7% and 100% (a closeness summed away to 0)


def test_minibatch_discrimination_keeps_spectral_norm_and_survives_a_gradient_penalty():
    d = MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2, spectral_norm=True), num_kernels=4)
    assert torch.nn.utils.parametrize.is_parametrized(d.head)
    penalty = GradientPenalty(10.0)(d, torch.randn(8, 2), torch.randn(8, 2))
    penalty.backward()  # differentiates the minibatch layer twice
    raw = d.parametrizations.T.original  # T is spectrally normalised with the rest of D
    assert raw.grad is not None and torch.isfinite(raw.grad).all()


def test_minibatch_discrimination_under_spectral_norm_normalises_t_as_well():
    torch.manual_seed(0)
    d = MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2, spectral_norm=True), num_kernels=4)
    with torch.no_grad():
        d.parametrizations.T.original.mul_(100.0)  # however large the raw weights grow
        for _ in range(30):  # power iterations, as training makes them
            d.T
    d.eval()
    assert float(torch.linalg.matrix_norm(d.T, ord=2)) == pytest.approx(1.0, rel=1e-2)
    plain = MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2), num_kernels=4)
    assert not torch.nn.utils.parametrize.is_parametrized(plain, "T")  # without spectral norm T is as before


@pytest.mark.parametrize("layer", [MinibatchDiscrimination, MinibatchStdDev])
def test_a_minibatch_layers_new_head_is_initialised_as_the_discriminators_own(layer):
    """DCGAN's head from N(0, 0.02), SNGAN's Glorot-uniform, biases 0; inside a Packed as well."""
    torch.manual_seed(0)
    dcgan = layer(Packed(DCGANDiscriminator(resolution=16, channels=2, width=64), pack=2)).head
    assert dcgan.weight.std().item() == pytest.approx(0.02, rel=0.1) and not dcgan.bias.any()
    resnet = layer(ResNetDiscriminator(resolution=16, channels=1, width=64, spectral_norm=False)).head
    glorot = (6 / sum(resnet.weight.shape)) ** 0.5
    assert resnet.weight.abs().max().item() <= glorot and resnet.weight.std().item() == pytest.approx(
        glorot / 3 ** 0.5, rel=0.15) and not resnet.bias.any()


def test_minibatch_discrimination_refuses_a_generator_batch_of_another_size():
    with pytest.raises(ConfigError, match=r"model.generator_batch_size=128 is not valid: expected null \(G's batches "
                       "as large as the real ones\) with a MinibatchDiscrimination"):
        small_module(discriminator=MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2)),
                     generator_batch_size=128)
    small_module(discriminator=MinibatchStdDev(MLPDiscriminator(width=16, depth=2)), generator_batch_size=128)


@pytest.mark.parametrize("precision", ["bf16-true"])  # 16-true is refused for every run (test_precision.py)
@pytest.mark.parametrize("option", [{"ema_decay": 0.999}, {"historical_averaging": 0.1}])
def test_averages_of_weights_refuse_16_bit_weights(option, precision, tmp_path):
    """Under bf16-true an update of 1e-3 of a step rounds to nothing: the average would stand still."""
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, precision=precision)
    with pytest.raises(ConfigError, match=rf"trainer.precision='{precision}' is not valid: expected 32-true, 64-true, "
                       rf"bf16-mixed or 16-mixed with model.{next(iter(option))}="):
        trainer.fit(small_module(**option), GridGaussians(batch_size=16, seed=0))


@pytest.mark.parametrize("wrap", ["stddev_inside_packed", "discrimination_around_packed"])
def test_packing_composes_with_the_minibatch_layers_either_way(wrap):
    torch.manual_seed(0)
    inner = MLPDiscriminator(input_shape=(4,), width=16, depth=2)  # 2-D points, packed by 2
    d = (Packed(MinibatchStdDev(inner, group_size=2), pack=2) if wrap == "stddev_inside_packed"
         else MinibatchDiscrimination(Packed(inner, pack=2), num_kernels=3))
    out = d(torch.randn(8, 2))
    assert out.shape == (4,)  # one output per pack
    out.sum().backward()
    unused = [name for name, p in d.named_parameters() if p.grad is None]
    assert unused == []  # no orphaned head left behind


def test_minibatch_stddev_appends_the_groups_mean_standard_deviation():
    torch.manual_seed(0)
    d = MinibatchStdDev(MLPDiscriminator(width=16, depth=2), group_size=2)
    f = torch.randn(4, 16)
    extra = d.batch_features(f)
    # groups are {0, 2} and {1, 3} (sample i is in group i mod n/group)
    expected_0 = torch.stack([f[0], f[2]]).std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(extra[0, 0], expected_0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(extra[2, 0], expected_0, atol=1e-4, rtol=1e-4)
    assert d.batch_features(f[:1].expand(4, -1)).max() < 1e-3  # a collapsed batch has ~0 spread
    with pytest.raises(ConfigError, match="multiple of MinibatchStdDev.group_size=2"):
        d(torch.randn(3, 2))


# -------------------------------------------------------------- feature matching
def test_feature_matching_loss_is_the_distance_between_mean_features():
    module = small_module(feature_matching=True)
    real, fake = torch.randn(10, 2), torch.randn(10, 2, requires_grad=True)
    loss = module.feature_matching_loss(real, fake)
    d = module.discriminator
    expected = ((d.features(real).mean(0) - d.features(fake).mean(0)) ** 2).sum()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert fake.grad is not None
    assert module.feature_matching_loss(real, real) == 0


def test_feature_matching_needs_features_and_excludes_unrolling():
    class NoFeatures(nn.Module):
        def forward(self, x):
            return x.sum(1)

    with pytest.raises(ConfigError, match="model.feature_matching=True is not valid"):
        small_module(discriminator=NoFeatures(), feature_matching=True)
    with pytest.raises(ConfigError, match="model.unrolled_steps=3 is not valid"):
        small_module(feature_matching=True, unrolled_steps=3)


@pytest.mark.parametrize("other", [{"penalties": [R1Penalty(weight=1.0)]}, {"historical_averaging": 0.5}, WGAN,
                                   WGANGP, DRAGAN])  # clipping; the objectives' own gradient penalties
def test_unrolling_refuses_what_its_look_ahead_updates_would_leave_out(other):
    with pytest.raises(ConfigError, match="model.unrolled_steps=2 is not valid: expected 0 with "):
        if isinstance(other, type):
            other(MLPGenerator(latent_dim=4, width=16, depth=2, batch_norm=False), MLPDiscriminator(width=16, depth=2),
                  unrolled_steps=2)
        else:
            small_module(unrolled_steps=2, **other)
    small_module(unrolled_steps=2)  # the plain objective unrolls


# ------------------------------------------------------------------ unrolled D
def adam_with_state(d: nn.Module, loss_fn) -> torch.optim.Adam:
    optimizer = torch.optim.Adam(d.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for _ in range(3):
        optimizer.zero_grad()
        loss_fn(d).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def test_unrolling_leaves_the_real_discriminator_and_its_optimizer_untouched():
    torch.manual_seed(0)
    module = small_module(discriminator=MLPDiscriminator(width=16, depth=2, spectral_norm=True))
    d = module.discriminator
    real, fake = torch.randn(16, 2), module.generator(torch.randn(16, 4))
    optimizer = adam_with_state(d, lambda d: module.discriminator_loss(d(real), d(fake.detach())))
    params = copy.deepcopy(d.state_dict())  # parameters and spectral-norm buffers
    state = copy.deepcopy(optimizer.state_dict())

    unrolled = unrolled_discriminator(d, optimizer, lambda u: module.discriminator_loss(u(real), u(fake)), 5)
    module.generator_loss(unrolled(fake)).backward()

    for key, value in d.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert all(p.grad is None for p in d.parameters())
    for index, entry in optimizer.state_dict()["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, state["state"][index][name])
    assert all(p.grad is not None for p in module.generator.parameters())


def test_one_unrolled_step_is_one_adam_step_and_the_look_ahead_changes_gs_gradient():
    torch.manual_seed(0)
    module = small_module()
    d = module.discriminator
    real, z = torch.randn(16, 2), torch.randn(16, 4)
    fake = module.generator(z).detach()
    optimizer = adam_with_state(d, lambda d: module.discriminator_loss(d(real), d(fake)))
    stepped = copy.deepcopy(d)
    reference = torch.optim.Adam(stepped.parameters(), lr=1e-2, betas=(0.5, 0.9))
    reference.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    module.discriminator_loss(stepped(real), stepped(fake)).backward()
    reference.step()
    one = unrolled_discriminator(d, optimizer, lambda u: module.discriminator_loss(u(real), u(fake)), 1)
    torch.testing.assert_close(one(real), stepped(real), atol=1e-6, rtol=1e-5)

    def generator_gradient(steps: int) -> torch.Tensor:
        module.generator.zero_grad()
        fake = module.generator(z)
        u = unrolled_discriminator(d, optimizer, lambda u: module.discriminator_loss(u(real), u(fake)), steps)
        module.generator_loss(u(fake)).backward()
        return torch.cat([p.grad.flatten() for p in module.generator.parameters()])

    plain = generator_gradient(0)
    module.generator.zero_grad()
    module.generator_loss(d(module.generator(z))).backward()
    torch.testing.assert_close(plain, torch.cat([p.grad.flatten() for p in module.generator.parameters()]))
    assert not torch.allclose(generator_gradient(5), plain, rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------- EMA
def test_ema_moves_only_a_copy_of_g_by_one_minus_decay():
    generator = MLPGenerator(latent_dim=4, width=8, depth=1)
    ema = make_ema(generator)
    before_g = copy.deepcopy(generator.state_dict())
    before_ema = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(1.0)
    after_g = copy.deepcopy(generator.state_dict())
    update_ema(ema, generator, decay=0.9)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, after_g[key])
    for e, old, new in zip(ema.parameters(), before_ema, generator.parameters()):
        torch.testing.assert_close(e, 0.9 * old + 0.1 * new)
        assert not e.requires_grad
    assert any(not torch.equal(before_g[k], after_g[k]) for k in before_g)


def test_training_with_ema_keeps_it_out_of_the_optimizers_and_scores_it(tmp_path):
    from lit_gan.callbacks import Evaluation

    torch.manual_seed(0)
    module = small_module(ema_decay=0.9, ema_start=3)
    trainer = fit(module, 8, tmp_path, [Evaluation(every_n_generator_steps=4, num_samples=200, plot=False)])
    optimized = {id(p) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in module.generator_ema.parameters()}
    assert not all(torch.equal(a, b) for a, b in zip(module.generator_ema.parameters(), module.generator.parameters()))
    rows = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["generator_step"] for r in rows] == [0, 4, 8]
    assert {"eval/modes", "eval_ema/modes", "eval_ema/reverse_kl"} <= set(rows[-1])
    assert rows[0]["eval/reverse_kl"] == rows[0]["eval_ema/reverse_kl"]  # identical at step 0
    z = torch.randn(10, 4)
    assert not torch.allclose(module.generate(z), module.generate(z, ema=True))


def test_the_moving_average_is_scored_with_its_own_batch_norm_statistics(tmp_path):
    from lit_gan.callbacks import Evaluation

    torch.manual_seed(0)
    module = NonSaturatingGAN(MLPGenerator(latent_dim=4, width=16, depth=2, batch_norm=True),
                              MLPDiscriminator(width=16, depth=2), lr_d=1e-2, lr_g=1e-2, ema_decay=0.9, ema_start=1)
    evaluation = Evaluation(every_n_generator_steps=10, num_samples=500, plot=False)
    fit(module, 10, tmp_path, [evaluation])
    ema, noise = module.generator_ema, evaluation.statistics_noise
    # The last evaluation left the average with statistics of its own, over the fixed statistics noise in
    # training-size batches (16 here), not with G's copied ones.
    expected = copy.deepcopy(ema)
    torch.optim.swa_utils.update_bn(noise.split(16), expected)
    for (name, buffer), wanted, copied in zip(ema.named_buffers(), expected.buffers(), module.generator.buffers()):
        assert torch.equal(buffer, wanted), name
        assert name.endswith("num_batches_tracked") or not torch.allclose(buffer, copied), name
    # In one batch, the recomputed statistics make eval mode what train mode is on that batch.
    recompute_batch_norm(ema, noise, batch_size=len(noise))
    with torch.no_grad():
        torch.testing.assert_close(ema.eval()(noise), ema.train()(noise), atol=5e-3, rtol=5e-3)  # unbiased var


# --------------------------------------------------------------- historical averaging
def test_historical_average_penalty_is_zero_at_the_running_mean_of_all_past_parameters():
    network = nn.Linear(3, 2)
    history = [copy.deepcopy(list(network.parameters()))]
    average = HistoricalAverage(network)
    assert average.penalty(network) == 0
    for _ in range(4):
        with torch.no_grad():
            for p in network.parameters():
                p.add_(torch.randn_like(p))
        average.update(network)
        history.append(copy.deepcopy(list(network.parameters())))
    means = [torch.stack(ps).mean(0) for ps in zip(*history)]
    for m, expected in zip(average.means(), means):
        torch.testing.assert_close(m, expected)
    expected_penalty = sum(((p - m) ** 2).sum() for p, m in zip(network.parameters(), means))
    torch.testing.assert_close(average.penalty(network), expected_penalty)
    with torch.no_grad():
        for p, m in zip(network.parameters(), average.means()):
            p.copy_(m)
    assert average.penalty(network) == 0


def test_historical_averaging_penalises_both_players_and_is_saved(tmp_path):
    module = small_module(historical_averaging=0.5)
    fit(module, 3, tmp_path)
    assert module.historical_average_d.count == 4 and module.historical_average_g.count == 4
    assert {"penalty/historical_average", "penalty/historical_average_generator"} <= set(module.step_losses)
    assert module.step_losses["penalty/historical_average"] > 0 and module.step_losses[
        "penalty/historical_average_generator"] > 0  # both players moved away from their running means
    state = module.state_dict()
    assert "historical_average_d.mean_0" in state and "historical_average_g.count" in state


def test_historical_average_resumed_from_a_state_dict_continues_the_same_mean():
    """The update reads a host copy of the count; loading a state must set it, or the mean restarts its weights."""
    torch.manual_seed(0)
    network, steps = nn.Linear(3, 2), [[torch.randn(2, 3), torch.randn(2)] for _ in range(6)]
    straight, resumed = HistoricalAverage(network), HistoricalAverage(network)
    for i, values in enumerate(steps):
        with torch.no_grad():
            for p, v in zip(network.parameters(), values):
                p.copy_(v)
        straight.update(network)
        if i == 2:
            resumed.load_state_dict(straight.state_dict())
        elif i > 2:
            resumed.update(network)
    assert resumed.host_count == straight.host_count == 7
    for m, expected in zip(resumed.means(), straight.means()):
        torch.testing.assert_close(m, expected, rtol=0, atol=0)


# ------------------------------------------------------------------ instance noise
def test_instance_noise_anneals_linearly_to_zero():
    assert [annealed_std(0.2, s, 4) for s in (0, 1, 2, 4, 10)] == pytest.approx([0.2, 0.15, 0.1, 0.0, 0.0])


def test_instance_noise_reaches_d_inputs_until_annealed(tmp_path):
    """What D is given in training: the real batch plus noise of std 0.5, 0.25, then the real batch itself."""

    class Inputs(MLPDiscriminator):
        def features(self, x):
            self.inputs.append(x.detach().clone())
            return super().features(x)

    class RealInputs(pl.Callback):  # per iteration: D's first input (the real batch) less the real batch
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            inputs = module.discriminator.inputs
            noise.append(inputs[-3] - module.real_batch)  # D(real), D(fake) in D's step, D(fake) in G's
            inputs.clear()

    noise = []
    discriminator = Inputs(width=16, depth=2)
    discriminator.inputs = []
    module = small_module(instance_noise=0.5, instance_noise_steps=2, discriminator=discriminator)
    trainer = pl.Trainer(max_steps=optimizer_steps(4, 1), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[RealInputs()])
    trainer.fit(module, GridGaussians(batch_size=256, seed=0))
    assert [n.std().item() for n in noise[:2]] == [pytest.approx(0.5, rel=0.1), pytest.approx(0.25, rel=0.1)]
    assert all(not n.any() for n in noise[2:]) and len(noise) == 4  # annealed away: the data as it is


def test_instance_noise_over_a_run_of_unknown_length_is_refused(tmp_path):
    """Annealed over the whole run by default: a Trainer without max_steps gives no run to anneal over."""
    module = small_module(instance_noise=0.1)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model.instance_noise_steps=None is not valid: expected an integer >= 1, "
                                          r"or a run of known length"):
        trainer.fit(module, GridGaussians(batch_size=16, seed=0))
    fit(small_module(instance_noise=0.1), 2, tmp_path)  # with max_steps it anneals over them


def test_a_minibatch_layer_inside_another_is_refused():
    # The outer layer read the inner D's features only: the inner batch features were dropped and T never trained.
    from lit_gan.nets import MinibatchDiscrimination, MinibatchStdDev

    with pytest.raises(ConfigError, match=r"MinibatchStdDev.discriminator='MinibatchDiscrimination' is not valid: "
                                          r"expected a discriminator without a minibatch layer of its own"):
        MinibatchStdDev(MinibatchDiscrimination(MLPDiscriminator(width=16, depth=2)))


def test_minibatch_stddev_of_a_collapsed_float16_batch_has_finite_gradients():
    # In float16 the 1e-8 under the square root is 0: identical samples gave sqrt(0) and NaN gradients.
    from lit_gan.nets import MinibatchStdDev

    layer = MinibatchStdDev(MLPDiscriminator(width=16, depth=2), group_size=4)
    features = torch.ones(8, 16, dtype=torch.float16, requires_grad=True)
    out = layer.batch_features(features)
    out.sum().backward()
    assert out.dtype == torch.float16 and torch.isfinite(features.grad).all()


def test_a_checkpoint_between_evaluations_holds_the_moving_average_with_its_own_batch_norm_statistics(tmp_path):
    """Between evaluations the average carries copies of G's statistics; a checkpoint written then (here at
    iteration 5, evaluated at 0 and 12 only) gave a user sampling from its average G's statistics."""
    cli = main(["--config", "configs/stacked_digits/ns_ema_dcgan.yaml", "--generator_steps=12",
                "--model.init_args.ema_start=2", "--evaluation.every_n_generator_steps=100",
                "--evaluation.num_samples=256", "--checkpoint.every_n_generator_steps=5", "--checkpoint.keep=3",
                *quiet_args(tmp_path)])
    checkpoint = torch.load(run_directory(cli.trainer) / "checkpoints" / "generator_step=0000005.ckpt",
                            weights_only=True)["state_dict"]
    module = copy.deepcopy(cli.model)
    module.load_state_dict(checkpoint)
    evaluation = find_callback(cli.trainer, Evaluation)
    recompute_batch_norm(module.generator_ema, evaluation.statistics_noise, cli.datamodule.batch_size)
    statistics = [name for name in checkpoint if name.startswith("generator_ema.") and "running_" in name]
    assert statistics
    for name in statistics:
        own = module.state_dict()[name]
        assert torch.equal(checkpoint[name], own), name
        assert not torch.equal(own, checkpoint[name.replace("generator_ema.", "generator.", 1)]), name
