"""A progress bar that counts generator iterations, the unit every GAN paper uses."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from lit_gan.objectives.base import optimizer_steps

SHOWN = {"loss/discriminator": "loss_D", "loss/generator": "loss_G", "wasserstein_estimate": "W"}


class GeneratorProgressBar(TQDMProgressBar):
    """One bar for the whole run, in generator iterations, with the latest logged losses."""

    shown_values: dict | None = None  # the module's logged_values now in the bar's postfix

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        # A run resumed mid-epoch gets no on_train_epoch_start before its first batch: Lightning's bar, "66/?".
        self.start_bar(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0 and self.train_progress_bar.total is not None:
            return  # one bar across epochs: the clock does not restart
        self.start_bar(trainer, pl_module)

    def start_bar(self, trainer, pl_module) -> None:
        """The bar counts the run's generator iterations, from where the run stands."""
        per_iteration = optimizer_steps(1, pl_module.n_critic)
        total = trainer.max_steps // per_iteration if trainer.max_steps > 0 else None
        self.train_progress_bar.reset(total=total)
        self.train_progress_bar.initial = pl_module.generator_step
        self.train_progress_bar.n = pl_module.generator_step
        self.train_progress_bar.set_description("Generator iterations")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.generator_step
        bar = self.train_progress_bar
        if step == bar.n or not self._should_update(step, bar.total):
            return
        if pl_module.logged_values is not self.shown_values:  # a new dict every log_every_n_steps
            self.shown_values = pl_module.logged_values
            bar.set_postfix({SHOWN[k]: f"{v:.3g}" for k, v in self.shown_values.items() if k in SHOWN}, refresh=False)
        # update() redraws at most every tqdm `mininterval` (0.1 s): redrawing at each of a toy MLP's
        # iterations cost ~0.6 ms of its ~10 (docs/PERFORMANCE.md). Closing the bar draws the last state.
        bar.update(step - bar.n)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Keep the bar open between epochs (the base class would reset its postfix)."""
