"""OptimConfig: one declaration of the optimiser settings, nested in both trainers' configs with
each trainer's defaults, offered flat on both command lines, and read from the flat config dicts
that checkpoints stored before it was nested."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from trainers.config import TrainConfig, config_from_dict, parse_args
from trainers.embed_config import EMBED_OPTIM, EmbedConfig, embed_config_from_dict, parse_embed_args
from trainers.optim_config import OPTIM_FIELDS, OptimConfig


def test_each_trainer_keeps_its_own_defaults_on_its_command_line():
    assert TrainConfig(net="pnet").optim == parse_args(["--net", "pnet"]).optim == OptimConfig()
    assert (OptimConfig().weight_decay, OptimConfig().warmup_epochs, OptimConfig().grad_clip) == (1e-4, 0.5, 1.0)
    embed = parse_embed_args(["--data", "d", "--out", "o"])
    assert embed.optim == EmbedConfig(data="d", out="o").optim == EMBED_OPTIM
    assert (EMBED_OPTIM.weight_decay, EMBED_OPTIM.warmup_epochs, EMBED_OPTIM.grad_clip) == (5e-4, 1.0, 5.0)
    changed = parse_embed_args(["--data", "d", "--out", "o", "--lr", "0.01", "--grad-clip", "0"])
    assert changed.optim == OptimConfig(lr=0.01, weight_decay=5e-4, warmup_epochs=1.0, grad_clip=None)


@pytest.mark.parametrize("flag, value", [("--lr", "0"), ("--lr", "nan"), ("--warmup-epochs", "-1"),
                                         ("--momentum", "-0.1"), ("--weight-decay", "-1"), ("--grad-clip", "-1")])
def test_bad_values_are_usage_errors_naming_the_option_for_both_trainers(flag, value, capsys):
    for parse in (lambda a: parse_args(["--net", "pnet", *a]),
                  lambda a: parse_embed_args(["--data", "d", "--out", "o", *a])):
        with pytest.raises(SystemExit) as exit_:
            parse([flag, value])
        assert exit_.value.code == 2 and f"error: {flag} must be " in capsys.readouterr().err


def test_a_flat_stored_config_loads_into_the_nested_one_with_the_trainers_defaults():
    detector = asdict(TrainConfig(net="rnet", optim=OptimConfig(lr=0.02, schedule="step")))
    flat = {**{k: v for k, v in detector.items() if k != "optim"}, **detector["optim"]}
    assert set(OPTIM_FIELDS) <= flat.keys()
    assert config_from_dict(flat) == config_from_dict(detector) == TrainConfig(
        net="rnet", optim=OptimConfig(lr=0.02, schedule="step"))
    # a field the old dict lacks takes that trainer's default
    embed = {k: v for k, v in asdict(EmbedConfig(data="d", out="o")).items() if k != "optim"}
    assert embed_config_from_dict({**embed, "lr": 0.3}).optim == OptimConfig(
        lr=0.3, weight_decay=5e-4, warmup_epochs=1.0, grad_clip=5.0)
