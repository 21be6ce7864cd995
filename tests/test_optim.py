"""ContiguousAdam: torch's Adam, bit for bit, in one pass over a group's parameters on a CPU."""

import io

import pytest
import torch
from torch import nn

from lit_gan.nets import MLPDiscriminator
from lit_gan.optim import ContiguousAdam


def network() -> nn.Module:
    torch.manual_seed(0)
    return MLPDiscriminator(width=16, depth=2)


def train_both(options: dict, steps: int = 30, events: dict | None = None):
    """Train two copies of one network, with torch's Adam and with ContiguousAdam, on the same batches.

    ``events`` maps a step to a function ``(network, optimizer) -> optimizer`` applied to the
    ContiguousAdam copy before that step (to reload state, move parameters, ...).
    """
    plain, contiguous = network(), network()
    reference = torch.optim.Adam(plain.parameters(), **options)
    optimizer = ContiguousAdam(contiguous.parameters(), foreach=True, **options)
    torch.manual_seed(1)
    batches = [torch.randn(32, 2) for _ in range(steps)]
    for i, x in enumerate(batches):
        if events and i in events:
            optimizer = events[i](contiguous, optimizer)
        for net, opt in ((plain, reference), (contiguous, optimizer)):
            opt.zero_grad(set_to_none=True)
            (net(x) ** 2).mean().backward()
            opt.step()
    return plain, reference, contiguous, optimizer


def assert_same(plain, reference, contiguous, optimizer) -> None:
    for p, q in zip(plain.parameters(), contiguous.parameters()):
        assert torch.equal(p, q)
    mine, theirs = optimizer.state_dict(), reference.state_dict()
    settings = [[{k: v for k, v in g.items() if k != "foreach"} for g in sd["param_groups"]] for sd in (mine, theirs)]
    assert settings[0] == settings[1]
    for i, state in theirs["state"].items():
        assert state.keys() == mine["state"][i].keys()
        for key, value in state.items():
            assert torch.equal(value, mine["state"][i][key]), (i, key)


def one_storage(module: nn.Module) -> bool:
    return len({p.untyped_storage().data_ptr() for p in module.parameters()}) == 1


@pytest.mark.parametrize("options", [
    dict(lr=1e-2, betas=(0.5, 0.9)),
    dict(lr=3e-3, betas=(0.0, 0.99), weight_decay=1e-2, amsgrad=True),
    dict(lr=1e-2, maximize=True, eps=1e-6),
])
def test_the_same_weights_and_state_as_torch_adam_to_the_bit(options):
    plain, reference, contiguous, optimizer = train_both(options)
    assert one_storage(contiguous) and not one_storage(plain)  # the one-buffer step did run
    assert_same(plain, reference, contiguous, optimizer)


def test_state_saved_and_loaded_in_either_class_continues_the_same_run():
    def reload(_, optimizer):
        saved = io.BytesIO()
        torch.save(optimizer.state_dict(), saved)
        saved.seek(0)
        optimizer.load_state_dict(torch.load(saved))
        return optimizer

    def from_torch_adam(net, optimizer):
        adam = torch.optim.Adam(net.parameters(), lr=1e-2)  # as when a checkpoint is resumed on a GPU
        adam.load_state_dict(optimizer.state_dict())
        return adam

    def back_to_contiguous(net, adam):
        optimizer = ContiguousAdam(net.parameters(), lr=1e-2)
        optimizer.load_state_dict(adam.state_dict())
        return optimizer

    events = {10: reload, 15: from_torch_adam, 20: back_to_contiguous}
    plain, reference, contiguous, optimizer = train_both(dict(lr=1e-2), events=events)
    assert isinstance(optimizer, ContiguousAdam) and one_storage(contiguous)
    assert_same(plain, reference, contiguous, optimizer)


def test_parameters_given_new_storage_are_laid_out_again():
    def move(net, optimizer):  # as module.to(...) does: every parameter gets a new tensor
        for p in net.parameters():
            p.data = p.data.clone()
        return optimizer

    plain, reference, contiguous, optimizer = train_both(dict(lr=1e-2), events={12: move})
    assert one_storage(contiguous)
    assert_same(plain, reference, contiguous, optimizer)


def test_a_parameter_without_gradient_takes_adams_own_step():
    """Adam leaves a parameter without gradient alone (its step count stays); so must we."""
    plain, contiguous = network(), network()
    reference = torch.optim.Adam(plain.parameters(), lr=1e-2)
    optimizer = ContiguousAdam(contiguous.parameters(), lr=1e-2)
    torch.manual_seed(1)
    for i in range(12):
        x = torch.randn(32, 2)
        for net, opt in ((plain, reference), (contiguous, optimizer)):
            opt.zero_grad(set_to_none=True)
            (net(x) ** 2).mean().backward()
            if 4 <= i < 6:
                net.head.bias.grad = None  # sits out two steps
            opt.step()
    steps = {float(s["step"]) for s in optimizer.state.values()}
    assert steps == {10.0, 12.0}  # the counts differ now, so the step stays per tensor
    assert_same(plain, reference, contiguous, optimizer)


def test_channels_last_parameters_keep_their_layout():
    conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    optimizer = ContiguousAdam(conv.parameters(), lr=1e-2)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_step_counts_stay_float32_under_a_bfloat16_default_dtype():
    """bf16-true trains under a bfloat16 default dtype, whose integers stop at 256."""
    plain, contiguous = network().bfloat16(), network().bfloat16()
    reference = torch.optim.Adam(plain.parameters(), lr=1e-3)
    optimizer = ContiguousAdam(contiguous.parameters(), lr=1e-3)
    x = torch.randn(16, 2, dtype=torch.bfloat16)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        for _ in range(300):
            for net, opt in ((plain, reference), (contiguous, optimizer)):
                opt.zero_grad(set_to_none=True)
                (net(x).float() ** 2).mean().backward()
                opt.step()
    finally:
        torch.set_default_dtype(default)
    assert one_storage(contiguous)
    assert_same(plain, reference, contiguous, optimizer)
    assert float(optimizer.state_dict()["state"][0]["step"]) == 300


def test_step_hooks_run_once_per_step_on_either_path():
    torch.optim.Adam(network().parameters())  # once an Adam exists, torch wraps Adam.step with the hook runner
    net = network()
    optimizer = ContiguousAdam(net.parameters(), lr=1e-2)
    calls = []
    optimizer.register_step_post_hook(lambda *_: calls.append(1))
    for skip_a_gradient in (False, True):  # the one-buffer step, then Adam's own
        optimizer.zero_grad(set_to_none=True)
        (net(torch.randn(8, 2)) ** 2).mean().backward()
        if skip_a_gradient:
            net.head.bias.grad = None
        optimizer.step()
    assert len(calls) == 2
