"""Adam that, on a CPU, updates all of a parameter group's tensors as one."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.adam import adam


def step_dtype() -> torch.dtype:
    """The dtype of Adam's step count: float32 (float64 under a float64 default), whatever the parameters'.

    A bfloat16 count would stop at 256 (bf16-true sets the default dtype around training_step).
    """
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class ContiguousAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose CPU step runs once over a group's parameters laid end to end.

    On a CPU, torch's Adam (per-tensor loop or ``foreach``) dispatches its element-wise operations
    once per parameter tensor; for the toy MLPs (8 small tensors each) that costs more than the
    arithmetic. Here a group's parameters, and their Adam moments, are views into one buffer each,
    so every operation runs once over all of them: the same function as Adam's own per-tensor step
    (``torch.optim.adam.adam``) on the same numbers, element by element, hence the same weights to
    the last bit (tests/test_optim.py), and a toy MLP iteration ~0.6-0.7 ms (of 8-10) faster than foreach Adam
    (docs/PERFORMANCE.md).

    The state is Adam's (per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints
    load into either class. Where a group cannot be laid out this way (not on a CPU, a parameter
    without a gradient this step, mixed dtypes, non-contiguous or sparse tensors, ``capturable``,
    ``differentiable`` or ``fused``), the step is Adam's own. The layout is rebuilt whenever
    something replaced a parameter's storage (``module.to(...)``) or the state (``load_state_dict``).
    Laying out gives each parameter new storage: another tensor that aliased a parameter's old storage
    (tied weights made by sharing ``.data``; sharing the Parameter itself is fine) no longer follows it.
    """

    def __init__(self, params, **options):
        super().__init__(params, **options)
        # Per group index: its buffers (param, exp_avg, exp_avg_sq, max_exp_avg_sq, step, views), or False once
        # its state cannot be merged (step counts differ for good): Adam's own step then, until load_state_dict.
        self._layouts: dict[int, tuple | bool] = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not all(self._contiguous(i, group) for i, group in enumerate(self.param_groups)):
            self._unshare_steps()
            # Adam's step as defined, not as torch wraps it once an Adam exists (the wrapper runs the step
            # hooks, which this step's own wrapper has run already).
            getattr(torch.optim.Adam.step, "__wrapped__", torch.optim.Adam.step)(self)
            return loss
        for i, group in enumerate(self.param_groups):
            param, exp_avg, exp_avg_sq, max_exp_avg_sq, step, _ = self._layouts[i]
            grad = torch.cat([p.grad.reshape(-1) for p in group["params"]])
            beta1, beta2 = group["betas"]
            # decoupled_weight_decay exists from torch 2.7 on; 2.6 has no such key or argument.
            decoupled = {k: group[k] for k in ("decoupled_weight_decay",) if k in group}
            adam([param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if group["amsgrad"] else [], [step],
                 foreach=False, amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"], **decoupled)
        return loss

    def state_dict(self) -> dict:
        # A group's parameters share one step count here; torch's Adam, loading it, would add 1 to the
        # shared count once per parameter. Each gets its own copy, as Adam's own state_dict has.
        saved = super().state_dict()
        saved["state"] = {i: {**s, "step": s["step"].clone()} if "step" in s else s for i, s in saved["state"].items()}
        return saved

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._layouts = {}

    def _contiguous(self, index: int, group: dict) -> bool:
        """Whether group ``index`` is (or can now be) laid out in one buffer per tensor kind."""
        layout = self._layouts.get(index)
        if layout is False or not self._eligible(group):
            return False
        if layout is None or not self._intact(group["params"], layout):
            layout = self._layouts[index] = self._lay_out(group) or False
        return layout is not False

    def _unshare_steps(self) -> None:
        """Give each parameter its own step count again, before Adam's own step adds 1 to each."""
        for index, layout in list(self._layouts.items()):
            if layout is not False:
                for p in self.param_groups[index]["params"]:
                    self.state[p]["step"] = self.state[p]["step"].clone()
                del self._layouts[index]

    @staticmethod
    def _eligible(group: dict) -> bool:
        params = group["params"]
        if not params or group["capturable"] or group["differentiable"] or group["fused"]:
            return False
        dtype = params[0].dtype
        return all(p.device.type == "cpu" and p.dtype == dtype and p.is_contiguous() and not torch.is_complex(p)
                   and p.grad is not None and p.grad.dtype == dtype and not p.grad.is_sparse for p in params)

    def _intact(self, params: list[Tensor], buffers: tuple) -> bool:
        """Whether the parameters and their state are still the views laid out last time."""
        *_, step, views = buffers
        for p, (p_view, m_view, v_view) in zip(params, views):
            state = self.state.get(p)
            if (p.data_ptr() != p_view.data_ptr() or not state or state["exp_avg"] is not m_view
                    or state["exp_avg_sq"] is not v_view or state["step"] is not step):
                return False
        return True

    def _lay_out(self, group: dict) -> tuple | None:
        """Copy a group's parameters and state into one buffer each and make them views of it.

        None where the group's state cannot be merged (some parameters have state and others not, or
        their step counts differ, as when a parameter sat out a step without a gradient).
        """
        params = group["params"]
        states = [self.state.get(p) or {} for p in params]
        started = [bool(s) for s in states]
        if any(started) and not all(started):
            return None
        if all(started) and len({float(s["step"]) for s in states}) != 1:
            return None
        sizes = [p.numel() for p in params]

        def flat(tensors: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
            buffer = torch.cat([t.detach().reshape(-1) for t in tensors])
            return buffer, [view.view_as(p) for view, p in zip(buffer.split(sizes), params)]

        param, param_views = flat(params)
        for p, view in zip(params, param_views):
            p.data = view
        zeros = [torch.zeros_like(p) for p in params]
        kinds = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        merged = {k: flat([s[k] for s in states] if all(started) else zeros) for k in kinds}
        step = states[0]["step"].clone() if all(started) else torch.tensor(0.0, dtype=step_dtype())
        for i, p in enumerate(params):
            self.state[p] = {"step": step, **{k: merged[k][1][i] for k in kinds}}
        exp_avg, exp_avg_sq = merged["exp_avg"][0], merged["exp_avg_sq"][0]
        max_exp_avg_sq = merged["max_exp_avg_sq"][0] if group["amsgrad"] else None
        views = list(zip(param_views, merged["exp_avg"][1], merged["exp_avg_sq"][1]))
        return param, exp_avg, exp_avg_sq, max_exp_avg_sq, step, views
