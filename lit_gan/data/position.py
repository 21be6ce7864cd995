"""Where in its data a run stands, kept in checkpoints so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import lightning.pytorch as pl


class ResumableDataModule(pl.LightningDataModule):
    """A datamodule whose checkpoint holds the number of batches the module has trained on
    (``batches_consumed`` after a restore), from which its loaders resume."""

    def __init__(self):
        super().__init__()
        self.batches_consumed = 0  # restored from a checkpoint: where the data resumes

    def state_dict(self) -> dict:
        # The module's count, not the loader's: the loader may have fetched some batches ahead.
        module = self.trainer.lightning_module if self.trainer is not None else None
        return {"batches_consumed": getattr(module, "discriminator_step", 0)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_consumed = state_dict.get("batches_consumed", 0)
