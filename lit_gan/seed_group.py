"""Training processes of one config that make their updates together, as one SeedStack (``study --stack``).

Each member is an ordinary ``train.py`` run in a process of its own: its own data, random numbers,
W&B run, evaluation, checkpoints and log. Only the arithmetic of its D and G updates is shared. The
networks' parameters, batch-norm statistics and Adam moments of all members live in shared memory
(files on a RAM disk), as views in every member's modules. At each update every member writes its real
batch and the state of its random-number generator there and says so (a semaphore); member 0, once all
have, runs the update of all of them as one :class:`~lit_gan.stacking.SeedStack` and lets each go on (a
semaphore per member); each then reads back its losses and its generator's new state. Only member 0
writes while the others wait, and each member's numbers are its run's alone, to the bit
(tests/test_seed_group.py).

When the group cannot go on together (the runs are not stackable or not at the same step, a member
stops early, fails or is interrupted), the group is broken up and every member carries on alone from
the same state: only the speed changes.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_gan.objectives.base import GANModule, plain_single_device
from lit_gan.optim import ContiguousAdam
from lit_gan.stacking import (NotStackable, SeedStack, adam_step, bind_adam, check_stackable, config_fingerprint,
                              stacked_size, write_slot)

RNG_BYTES = torch.get_rng_state().numel()
MAX_METRICS = 64
KEYS_BYTES = 8192
# Status of the latest update, written by member 0: [update number, outcome].
STARTED, DONE, REFUSED, FAILED = 1, 2, 3, 4


class SeedGroup:
    """A picklable handle on one group: its shared files' ``directory``, its ``size`` (K), which ``slot``
    this member fills, and its signals: ``arrived`` (members 1..K-1 to member 0: my inputs are written),
    ``go`` (member 0 to each: the update is made) and ``broken`` (everyone goes on alone). Made by the study
    runner (:meth:`create`), one :meth:`member` per run."""

    def __init__(self, directory: str, size: int, arrived, go: list, broken, slot: int = 0):
        self.directory, self.size, self.slot = directory, size, slot
        self.arrived, self.go, self.broken = arrived, go, broken

    @classmethod
    def create(cls, context, directory: str, size: int) -> "SeedGroup":
        return cls(directory, size, context.Semaphore(0), [context.Semaphore(0) for _ in range(size)], context.Event())

    def member(self, slot: int) -> "SeedGroup":
        return SeedGroup(self.directory, self.size, self.arrived, self.go, self.broken, slot)

    def break_up(self, slot: int) -> None:
        """Member ``slot`` is leaving (or gone): every member goes on alone from its next update.

        Member 0 is woken if it waits for arrivals and lets the others go itself; if member 0 is the
        one leaving, nobody is computing, so the others are let go here.
        """
        self.broken.set()
        self.arrived.release()
        if slot == 0:
            for go in self.go:
                go.release()

    def shared(self, name: str, shape: tuple, dtype=torch.float32) -> Tensor:
        """The tensor every member maps from file ``name`` in the group's directory (zeros when new)."""
        count = 1
        for n in shape:
            count *= n
        return torch.from_file(str(Path(self.directory) / name), shared=True, size=count, dtype=dtype).view(shape)


class GroupMember(Callback):
    """Joins the run's GANModule to its group when training starts and leaves it when training ends.

    While joined, the module's ``update_discriminator`` / ``update_generator`` go through
    :class:`StackLink`; when the group is left or broken they are the module's own again.
    """

    def __init__(self, group: SeedGroup):
        self.group = group
        self.link: Optional[StackLink] = None

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Ctrl-C reaches every member at once, and member 0 may be writing the others' weights: every run takes
        # it at the end of the iteration (GeneratorCheckpoint), where each run's state is whole to save.
        try:
            self.link = StackLink(self.group, trainer, module)
        except NotStackable as reason:
            print(f"Training alone, not stacked with the other seeds: {reason}", file=sys.stderr, flush=True)
            self.group.break_up(self.group.slot)
            return
        module.seed_group = self.link if self.link.joined else None
        if self.link.joined:
            print(f"Seed group: this run makes its updates as one stacked computation with {self.group.size - 1} "
                  "other(s) of its config; its numbers are its own (lit_gan/seed_group.py)", flush=True)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        # The run's tensors are views of the group's shared buffers, and torch.save would write those whole
        # (every member's weights and moments): save copies of the run's own.
        checkpoint["state_dict"] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
        for state in checkpoint.get("optimizer_states", []):
            state["state"] = {i: {k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()}
                              for i, entry in state["state"].items()}

    def leave(self, module: pl.LightningModule) -> None:
        if self.link is not None:
            self.link.leave()
        if isinstance(module, GANModule):
            module.seed_group = None

    def on_train_end(self, trainer, module) -> None:
        if self.link is not None:  # what the group did for this run, in its log
            alone = module.discriminator_step - self.link.first_step - self.link.stacked
            print(f"Seed group: {self.link.stacked} discriminator updates made stacked, {alone} alone", flush=True)
        self.leave(module)

    def on_exception(self, trainer, module, exception) -> None:
        self.leave(module)


class StackLink:
    """One member's side of the group: shares its module's state, then makes its updates with the others'."""

    def __init__(self, group: SeedGroup, trainer: pl.Trainer, module: pl.LightningModule):
        self.group, self.module, self.updates = group, module, 0
        self.first_step, self.stacked = module.discriminator_step, 0  # D updates before joining; made stacked
        self.joined = self.left = False
        if not isinstance(module, GANModule):
            raise NotStackable(f"the model is a {type(module).__name__}, not a GANModule")
        if not plain_single_device(trainer) or trainer.strategy.root_device.type != "cpu":
            raise NotStackable("training is not in plain float32 on one CPU")
        if not module.direct_steps:
            raise NotStackable("a callback or the model listens to backward or optimizer-step hooks, which "
                               "a stack does not call")
        self.optimizers = [getattr(o, "optimizer", o) for o in module.optimizers()]
        check_stackable(module, self.optimizers)
        size, slot = group.size, group.slot
        self.storage = {}
        for role, network, optimizer in zip(("discriminator", "generator"), (module.discriminator, module.generator),
                                            self.optimizers):
            length = stacked_size(network, size)
            flat = group.shared(f"{role}.params", (length,))
            buffers = {name: group.shared(f"{role}.{name}", (size, *b.shape), b.dtype)
                       for name, b in network.named_buffers()}
            steps = group.shared(f"{role}.steps", (size,))  # Adam's count, one per member (each its own until joined)
            moments = (group.shared(f"{role}.exp_avg", (length,)), group.shared(f"{role}.exp_avg_sq", (length,)), steps)
            self.storage[role] = (flat, buffers, moments)
        # Where each member stands, for member 0 to check that all can stack: Adam steps, clock, instance
        # noise's horizon, and a fingerprint of the model's config (objective, settings, penalties, shapes).
        self.position = group.shared("position", (size, 6), torch.float64)
        self.rng = group.shared("rng", (size, RNG_BYTES), torch.uint8)
        # Per member: update number, batch size, lr_d, lr_g, whether G's update follows D's, whether to measure.
        self.request = group.shared("request", (size, 6), torch.float64)
        self.values = group.shared("values", (size, MAX_METRICS))
        self.keys = group.shared("keys", (KEYS_BYTES,), torch.uint8)
        self.status = group.shared("status", (2,), torch.int64)
        self.real: Optional[Tensor] = None
        self.stack: Optional[SeedStack] = None
        self.generator_results: Optional[dict[str, Tensor]] = None

        d_step, g_step = adam_step(self.optimizers[0]), adam_step(self.optimizers[1])
        fingerprint = config_fingerprint(module)
        hp = module.hparams
        horizon = (hp.instance_noise_steps or module.total_generator_steps()) if hp.instance_noise else 0
        self.position[slot] = torch.tensor([d_step, g_step, module.generator_step, module.discriminator_step,
                                            horizon, fingerprint], dtype=torch.float64)
        for role, network, optimizer in zip(("discriminator", "generator"), (module.discriminator, module.generator),
                                            self.optimizers):
            flat, buffers, moments = self.storage[role]
            write_slot(network, slot, flat, buffers, size)
            bind_adam(optimizer, slot, moments, size, write=True)
        self.joined = self._together(0, self._start_stack)

    def _together(self, number: int, work) -> bool:
        """Make update ``number`` with the others: member 0 runs ``work`` for all once every member has written
        its inputs. True when it was made for all; False when the group broke up before it started (this
        member's state untouched: it makes the update alone, as from now on every one)."""
        group = self.group
        if group.broken.is_set():
            return self._alone()
        if group.slot != 0:
            group.arrived.release()
            group.go[group.slot].acquire()
            done, outcome = self.status.tolist()
            # Member 0 writes update n+1's status only after making update n (and this member's inputs for
            # n+1 are not written yet, so n's outputs stand): a later number means n was made.
            if (done == number and outcome == DONE) or done > number:
                return True
            if done == number and outcome in (STARTED, FAILED):
                raise RuntimeError("the seed group's member 0 stopped in the middle of an update: this run's "
                                   "weights cannot be trusted past its last checkpoint")
            if done == number and outcome == REFUSED:
                print("Training alone from here: the seed group's member 0 found the runs cannot be stacked "
                      "(its log says why)", file=sys.stderr, flush=True)
            return self._alone()
        for _ in range(group.size - 1):
            group.arrived.acquire()
        if group.broken.is_set():  # someone left instead of arriving: nothing was touched
            return self._refuse(number)
        self.status.copy_(torch.tensor([number, STARTED]))
        try:
            work()
        except NotStackable as reason:  # raised before anything shared is written
            print(f"Training alone from here, not stacked: {reason}", file=sys.stderr, flush=True)
            return self._refuse(number)
        except Exception as error:
            if number != 0:
                raise
            # Setting up the stack writes nothing shared: everyone can still train alone.
            print(f"Training alone, the seed group could not be set up: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)
            return self._refuse(number)
        except BaseException:
            self.status.copy_(torch.tensor([number, FAILED]))
            self.leave()
            raise
        self.status.copy_(torch.tensor([number, DONE]))
        for go in group.go[1:]:
            go.release()
        return True

    def _refuse(self, number: int) -> bool:
        self.status.copy_(torch.tensor([number, REFUSED]))
        return self._alone()

    def _alone(self) -> bool:
        self.leave()
        return False

    def leave(self) -> None:
        """Go on alone (the module's own updates), and so will every other member."""
        self.joined = False
        if not self.left:
            self.left = True
            self.group.break_up(self.group.slot)

    def update_discriminator(self, real: Tensor, measure: bool) -> Optional[dict[str, Tensor]]:
        """This member's D update made with the others' (and, when G's update follows it in the module's
        cycle, that one too: one meeting per D step); None when it must make it alone."""
        if not self.joined:
            return None
        self.updates += 1
        slot, size, module = self.group.slot, self.group.size, self.module
        if self.real is None:
            self.real = self.group.shared("real", (size, *real.shape))
        if real.shape != self.real.shape[1:]:
            self._alone()
            return None
        self.real[slot].copy_(real)
        self.rng[slot].copy_(torch.get_rng_state())
        generator_follows = (module.discriminator_step + 1) % module.n_critic == 0
        lr_d, lr_g = (o.param_groups[0]["lr"] for o in self.optimizers)
        self.request[slot] = torch.tensor([self.updates, real.shape[0], lr_d, lr_g, generator_follows, measure],
                                          dtype=torch.float64)
        if not self._together(self.updates, lambda: self._stacked_update(generator_follows, measure)):
            return None
        self.stacked += 1
        torch.set_rng_state(self.rng[slot].clone())
        length = int.from_bytes(bytes(self.keys[:8].tolist()), "little")
        results, column = [], 0
        for keys in json.loads(bytes(self.keys[8:8 + length].tolist())):
            results.append({key: self.values[slot, column + i].clone() for i, key in enumerate(keys)})
            column += len(keys)
        self.generator_results = results[1] if generator_follows else None
        return results[0]

    def update_generator(self, real: Tensor, measure: bool) -> Optional[dict[str, Tensor]]:
        """This member's G update, made by the group with its last D update; None when it makes it alone."""
        if not self.joined:
            return None
        if self.generator_results is None:  # the group made this member's D update without the G one
            raise RuntimeError("the seed group has no generator update for this member: the module's "
                               "D/G cycle and the group's disagree")
        results, self.generator_results = self.generator_results, None
        return results

    # ------------------------------------------------------------------ member 0
    def _start_stack(self) -> None:
        positions = {tuple(row) for row in self.position.tolist()}
        if len(positions) != 1:
            raise NotStackable(f"the runs are at different steps or differ in size: {sorted(positions)}")
        trainer = self.module._trainer
        shadows = []
        for slot in range(1, self.group.size):
            # The other members' modules, as copies of this one bound to their slots (not the trainer).
            shadow = copy.deepcopy(self.module, {id(trainer): None})
            optimizers = []
            for network, own in zip((shadow.discriminator, shadow.generator), self.optimizers):
                defaults = {k: v for k, v in own.param_groups[0].items() if k in own.defaults}  # not initial_lr
                optimizers.append(ContiguousAdam(network.parameters(), **defaults))
            shadows.append((shadow, tuple(optimizers)))
        modules = [self.module] + [s for s, _ in shadows]
        optimizers = [tuple(self.optimizers)] + [o for _, o in shadows]
        self.stack = SeedStack(modules, optimizers, storage=self.storage)

    def _stacked_update(self, generator_follows: bool, measure: bool) -> None:
        requests = self.request.tolist()
        if len({tuple(r) for r in requests}) != 1:
            raise NotStackable(f"the members asked for different updates (number, batch, learning rates, "
                               f"G's turn): {requests}")
        batch, lr_d, lr_g = requests[0][1:4]  # (update number, batch, lr_d, lr_g, G's turn, measure)
        for module, (opt_d, opt_g) in zip(self.stack.modules[1:], zip(self.stack.adam_d.optimizers[1:],
                                                                      self.stack.adam_g.optimizers[1:])):
            opt_d.param_groups[0]["lr"], opt_g.param_groups[0]["lr"] = lr_d, lr_g
            module.generator_step = self.module.generator_step
        generators = []
        for state in self.rng:
            generators.append(torch.Generator())
            generators[-1].set_state(state.clone())
        updates = [self.stack.update_discriminator(self.real, generators, measure)]
        if generator_follows:
            updates.append(self.stack.update_generator(int(batch), generators, measure))
        for state, generator in zip(self.rng, generators):
            state.copy_(generator.get_state())
        keys = [list(results[0]) for results in updates]
        encoded = json.dumps(keys).encode()
        self.keys[:8 + len(encoded)] = torch.tensor(list(len(encoded).to_bytes(8, "little") + encoded),
                                                    dtype=torch.uint8)
        rows = [torch.stack([results[k][key].float() for results, names in zip(updates, keys) for key in names])
                for k in range(self.group.size)]  # member k: its D update's values, then its G update's
        self.values[:, :len(rows[0])] = torch.stack(rows)
