"""A new objective is one small class in the user's own file, picked up through ``class_path``."""

from __future__ import annotations

import textwrap

from lit_gan.cli import main
from tests.conftest import quiet_args

USER_OBJECTIVE = textwrap.dedent('''
    import torch.nn.functional as F
    from lit_gan.objectives import GANModule

    class KLGAN(GANModule):
        """G's loss -E logit D(G(z)): at the optimal D, logit D(x) = log p_data(x) / p_g(x), so G
        minimises KL(p_g || p_data), the mode-seeking direction (Sønderby et al. 2017)."""

        def discriminator_loss(self, real_logits, fake_logits):
            return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

        def generator_loss(self, fake_logits):
            return -fake_logits.mean()
''')


def test_an_objective_from_a_user_file_trains_through_the_cli(tmp_path, monkeypatch):
    (tmp_path / "my_objectives.py").write_text(USER_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = main(["--config", "configs/quickstart.yaml", "--model.class_path=my_objectives.KLGAN",
                "--generator_steps=3", "--evaluation.num_samples=100", *quiet_args(tmp_path), "--trainer.logger=false"])
    assert type(cli.model).__name__ == "KLGAN"
    assert cli.model.generator_step == 3
    assert len(cli.model.penalties) == 1  # the quickstart's R1 penalty composes with the new loss


USER_PENALTY = textwrap.dedent('''
    from lit_gan.penalties import Penalty

    class LogitPenalty(Penalty):
        """Keeps D's logits on real data near 0 (the drift term of Karras et al. 2018, Sec. A.1)."""

        name = "logit"

        def unweighted(self, discriminator, real, fake):
            return discriminator(real).pow(2).mean()
''')


def test_a_penalty_from_a_user_file_needs_no_stacking_arguments(tmp_path, monkeypatch):
    (tmp_path / "my_penalties.py").write_text(USER_PENALTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    penalties = '[{"class_path": "my_penalties.LogitPenalty", "init_args": {"weight": 0.5}}]'
    cli = main(["--config", "configs/quickstart.yaml", f"--model.init_args.penalties={penalties}",
                "--generator_steps=3", "--evaluation.num_samples=100", *quiet_args(tmp_path), "--trainer.logger=false"])
    assert [type(p).__name__ for p in cli.model.penalties] == ["LogitPenalty"]
    assert cli.model.generator_step == 3
    assert float(cli.model.step_losses["penalty/logit"]) > 0
