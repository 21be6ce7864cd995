"""Gradient penalties against closed forms on discriminators with known input gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_gan.penalties import DRAGANPenalty, GradientPenalty, R1Penalty


class Linear(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return x.flatten(1) @ self.w


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2: its input gradient is x."""

    def forward(self, x):
        return 0.5 * (x.flatten(1) ** 2).sum(1)


REAL = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
FAKE = torch.tensor([[-1.0, 1.0], [2.0, 2.0], [0.5, -0.5]])


@pytest.mark.parametrize("penalty", [GradientPenalty(weight=10.0), DRAGANPenalty(weight=10.0)])
def test_two_sided_penalties_on_a_linear_critic(penalty):
    """||grad|| = ||w|| = 5 at every point, so both equal 10 * (5 - 1)^2 wherever they sample."""
    value = penalty(Linear([3.0, 4.0]), REAL, FAKE)
    assert value.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2)


def test_gradient_penalty_on_a_quadratic_critic():
    """With real == fake every interpolate is that point, so the penalty is exact: mean (||x|| - 1)^2."""
    expected = ((REAL.norm(dim=1) - 1) ** 2).mean().item()
    assert GradientPenalty(weight=1.0)(HalfSquare(), REAL, REAL).item() == pytest.approx(expected)


def test_gradient_penalty_interpolates_between_real_and_fake():
    """On ||x||^2/2 the penalty depends on where x_hat lies; it must lie on the real-fake segments."""
    torch.manual_seed(0)
    alpha = torch.rand(3, 1)
    torch.manual_seed(0)
    value = GradientPenalty(weight=1.0)(HalfSquare(), REAL, FAKE)
    x_hat = alpha * REAL + (1 - alpha) * FAKE
    assert value.item() == pytest.approx(((x_hat.norm(dim=1) - 1) ** 2).mean().item())


def test_dragan_penalty_samples_around_the_real_data_alone():
    """On ||x||^2/2 the penalty depends on where x_hat lies: real + alpha * delta, delta = 0.5 std(x) U per
    coordinate, alpha per sample (Kodali et al.'s code); the fakes play no part."""
    torch.manual_seed(0)
    delta = 0.5 * REAL.std() * torch.rand(3, 2)
    alpha = torch.rand(3, 1)
    x_hat = REAL + alpha * delta
    for fake in (FAKE, -10 * FAKE):
        torch.manual_seed(0)
        value = DRAGANPenalty(weight=1.0, perturbation=0.5)(HalfSquare(), REAL, fake)
        assert value.item() == pytest.approx(((x_hat.norm(dim=1) - 1) ** 2).mean().item())


def test_r1_penalty_is_half_gamma_times_squared_gradient_norm_on_real_data():
    assert R1Penalty(weight=2.0)(Linear([3.0, 4.0]), REAL, FAKE).item() == pytest.approx(0.5 * 2.0 * 25.0)
    expected = 0.5 * 4.0 * (REAL.norm(dim=1) ** 2).mean().item()
    assert R1Penalty(weight=4.0)(HalfSquare(), REAL, FAKE).item() == pytest.approx(expected)


def test_penalty_gradient_reaches_the_critic_parameters():
    """The penalty is built with create_graph=True, so D's optimiser sees it: d/dw 10 (||w|| - 1)^2."""
    critic = Linear([3.0, 4.0])
    GradientPenalty(weight=10.0)(critic, REAL, FAKE).backward()
    w = critic.w.detach()
    expected = 10.0 * 2 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(critic.w.grad, expected)


@pytest.mark.parametrize("make", [lambda: GradientPenalty(weight=-1.0), lambda: R1Penalty(weight=-0.5),
                                  lambda: DRAGANPenalty(perturbation=0.0)])
def test_invalid_penalty_settings_are_refused(make):
    with pytest.raises(ValueError, match="expected"):
        make()


def test_a_penalty_shows_every_setting_a_resume_compares():
    # The resume check compares these with the checkpoint's; the weight alone let another target through.
    assert repr(GradientPenalty(10.0, target=750.0)) == "GradientPenalty(weight=10.0, target=750.0)"
    assert repr(DRAGANPenalty(10.0, perturbation=5.0)) == "DRAGANPenalty(weight=10.0, perturbation=5.0)"
    # At their defaults as a checkpoint of an earlier version wrote them, so that those still resume.
    assert repr(GradientPenalty(10.0)) == "GradientPenalty(weight=10.0)" and repr(R1Penalty(1.0)) == "R1Penalty(weight=1.0)"


def test_a_penalty_of_ones_own_shows_its_weight_whatever_its_constructor():
    class Forwarding(R1Penalty):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    class Gamma(R1Penalty):
        def __init__(self, gamma: float = 1.0):
            super().__init__(weight=gamma)

    # Without a parameter named weight it was left out: a resume with another weight went unnoticed.
    assert repr(Forwarding(5.0)) == "Forwarding(weight=5.0)" and repr(Gamma(3.0)) == "Gamma(weight=3.0)"
