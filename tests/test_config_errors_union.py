"""Wrong values for Optional, Union and constrained keys fail in one sentence, like any other config mistake."""

from __future__ import annotations

import pytest

from lit_gan.cli import main
from tests.conftest import quiet_args


@pytest.mark.parametrize("override, expected", [
    ("--model.init_args.ema_decay=abc", "model.init_args.ema_decay=abc is not valid: expected a number or null"),
    ("--checkpoint.mode=foo", "checkpoint.mode=foo is not valid: expected one of 'min', 'max' or null"),
    ("--stability.every_n_generator_steps=abc",
     "stability.every_n_generator_steps=abc is not valid: expected an integer or null"),
    ("--seed_everything=abc", "seed_everything=abc is not valid: expected true or false or an integer"),
    ("--trainer.log_every_n_steps=abc", "trainer.log_every_n_steps=abc is not valid: expected an integer or null"),
    ("--generator_steps=0", "generator_steps=0 is not valid: expected an integer >= 1"),
    ("--model.init_args.penalties.0.init_args.weight=2",
     "model.init_args.penalties.0.init_args.weight=2 is not valid: expected the whole list, not one item by its "
     "index (--model.init_args.penalties='[...]' as --print_config shows it), or an item to append "
     "(--model.init_args.penalties+=ITEM)"),
    ("--model.init_args.betas_d.0=0.1",  # jsonargparse made betas_d [0.0, 0.1] of it, silently
     "model.init_args.betas_d.0=0.1 is not valid: expected the whole list, not one item by its index "
     "(--model.init_args.betas_d='[...]' as --print_config shows it), or an item to append "
     "(--model.init_args.betas_d+=ITEM)"),
    ("--data=configs/data/gird.yaml",
     "data=configs/data/gird.yaml is not valid: expected an existing config file or a class path"),
], ids=["optional_in_a_class", "optional_literal", "optional_int", "union", "trainer_optional", "positive_int",
        "list_item_by_index", "tuple_item_by_index", "misspelt_block_file"])
def test_a_wrong_value_fails_in_one_sentence(capsys, tmp_path, override, expected):
    # quiet_args keep a run small should the override ever be accepted; the override comes last, so it wins.
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "configs/quickstart.yaml", *quiet_args(tmp_path), "--trainer.logger=false", override])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"error: {expected}"
    assert len(lines) == 2 and lines[1].startswith("tip: ")


def test_a_wrong_logger_value_names_its_key_once(capsys, tmp_path):
    # jsonargparse tries the logger as one and as a list of loggers, and reports the key in both: it was joined
    # into trainer.logger.init_args.offline.init_args.offline.
    with pytest.raises(SystemExit):
        main(["--config", "configs/quickstart.yaml", *quiet_args(tmp_path), "--trainer.logger.init_args.offline=maybe"])
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: trainer.logger.init_args.offline=maybe is not valid: expected true or false")


def test_none_as_wandbs_agent_writes_null_means_null(tmp_path):
    # The agent wrote ema_decay=None (refused: "expected a number or null") and dirpath=None (a folder "None").
    cli = main(["--config", "configs/quickstart.yaml", *quiet_args(tmp_path), "--generator_steps=1",
                "--trainer.logger=false", "--model.init_args.ema_decay=0.9", "--model.init_args.ema_decay=None",
                "--checkpoint.dirpath=None"])
    assert cli.model.hparams.ema_decay is None and cli.config.checkpoint.dirpath is None
