"""A new objective is one small class in the user's own file, picked up through ``class_path``."""

from __future__ import annotations

import textwrap

from lit_gan.cli import main
from tests.conftest import quiet_args

USER_OBJECTIVE = textwrap.dedent('''
    import torch.nn.functional as F
    from lit_gan.objectives import GANModule

    class RelativisticGAN(GANModule):
        """Relativistic standard GAN (Jolicoeur-Martineau 2019, Eq. 7)."""

        def discriminator_loss(self, real_logits, fake_logits):
            return F.softplus(-(real_logits - fake_logits)).mean()

        def generator_loss(self, fake_logits):
            return F.softplus(-fake_logits).mean()
''')


def test_an_objective_from_a_user_file_trains_through_the_cli(tmp_path, monkeypatch):
    (tmp_path / "my_objectives.py").write_text(USER_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = main(["--config", "configs/quickstart.yaml", "--model.class_path=my_objectives.RelativisticGAN",
                "--generator_steps=3", "--evaluation.num_samples=100", *quiet_args(tmp_path), "--trainer.logger=false"])
    assert type(cli.model).__name__ == "RelativisticGAN"
    assert cli.model.generator_step == 3
    assert len(cli.model.penalties) == 1  # the quickstart's R1 penalty composes with the new loss
