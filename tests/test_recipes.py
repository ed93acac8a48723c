"""Recipe files (configs/*.toml, read with ``--config``, core/cli.py): the shipped settings, and how they are read.

Each shipped recipe gives the settings the model cards name; its values are the defaults and options
given win; a missing file, a key that is no option and a value of the wrong type stop the command line
with one usage error naming the file and the key, and a value is checked as the option would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import prepare.generate as generate
from child_env import REPO
from core.cli import parse_config
from trainers.config import parse_args as parse_train
from trainers.embed_config import EmbedConfig, parse_embed_args

CONFIGS = REPO / "configs"
GENERATE = ["--wider-txt", "t.txt", "--wider-images", "i", "--out", "o"]


def train(net: str, *more: str):
    return parse_train(["--net", net, "--data", "d", "--out", "o", "--config", str(CONFIGS / f"{net}.toml"), *more])


def test_the_nets_recipes_are_the_shipped_settings():
    pnet, rnet, onet = train("pnet"), train("rnet"), train("onet")
    assert (pnet.epochs, pnet.flip) == (16, False)
    assert (rnet.epochs, rnet.loss_weights, rnet.kind_ratio, rnet.flip) == (8, (1, 1, 2.5), (3, 3, 1, 2), True)
    assert (onet.epochs, onet.loss_weights, onet.flip) == (10, (1, 1, 5), True)
    assert pnet == parse_train(["--net", "pnet", "--data", "d", "--out", "o", "--no-flip"])


def test_the_builds_recipes_are_the_shipped_settings():
    plain = generate.parse_args(GENERATE)
    for build in ("pnet", "rnet", "val"):  # the generator's defaults
        assert generate.parse_args([*GENERATE, "--config", str(CONFIGS / f"data-{build}.toml")]) == plain
    onet = generate.parse_args([*GENERATE, "--config", str(CONFIGS / "data-onet.toml")])
    assert onet.mine.thresholds == (0.6, 0.3, 0.7)
    lm = onet.landmark_aug
    assert (lm.min_scale, lm.max_scale, lm.max_shift, lm.min_iou) == (0.9, 1.4, 0.15, 0.45)


def test_the_embedders_recipe_is_the_configs_defaults():
    # weights/EMBEDDER_CARD.md: the shipped embedder is EmbedConfig's defaults, written out in the file
    given = parse_embed_args(["--data", "d", "--out", "o", "--config", str(CONFIGS / "embedder.toml")])
    assert given == EmbedConfig(data="d", out="o")


def test_options_given_win_over_the_file_and_a_later_file_over_an_earlier(tmp_path):
    more = tmp_path / "more.toml"
    more.write_text("epochs = 3\nkind_ratio = [1, 1, 1, 1]\n")
    cfg = train("rnet", "--epochs", "5", "--no-flip", "--config", str(more))
    assert (cfg.epochs, cfg.flip, cfg.kind_ratio, cfg.loss_weights) == (5, False, (1, 1, 1, 1), (1, 1, 2.5))
    tiny = generate.parse_args([*GENERATE, "--tiny", "--config", str(CONFIGS / "data-onet.toml"),
                                "--landmark-min-iou", "0.5"])
    assert (tiny.landmark_aug.max_scale, tiny.landmark_aug.min_iou) == (1.4, 0.5)
    assert tiny.writer.shard_bytes == generate.TINY["writer"].shard_bytes  # --tiny still applies


@dataclass(frozen=True)
class Toy:
    out: str
    """A required option."""
    steps: int = 2
    """Must be positive."""
    sizes: tuple[int, int] = (1, 2)
    """Two sizes."""
    mode: str = field(default="a", metadata={"choices": ("a", "b")})
    """a or b."""
    scale: float | None = None
    """None: none."""
    fast: bool = False
    """A switch."""

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")


def test_every_kind_of_value_reads_as_its_option(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('out = "x"\nsteps = 4\nsizes = [3, 4]\nmode = "b"\nscale = "none"\nfast = true\n')
    assert parse_config(Toy, ["--config", str(recipe)]) == Toy("x", 4, (3, 4), "b", None, True)
    recipe.write_text("scale = 2\n")
    assert parse_config(Toy, ["--config", str(recipe), "--out", "y", "--steps", "9"]) == Toy("y", 9, scale=2.0)


@pytest.mark.parametrize("text, says", [
    ("nope = 1", "'nope' is not an option"),
    ("[toy]\nsteps = 3", "'toy' is not an option of prog (options are written flat"),
    ("steps = 2.5", "steps: expected an int, got 2.5"),
    ("steps = true", "steps: expected an int, got True"),
    ('steps = "x"', "steps: expected an int, got 'x'"),
    ("sizes = [1, 2, 3]", "sizes: expected 2 values, got 3"),
    ("sizes = 1", "sizes: expected a list of ints, got 1"),
    ('mode = "c"', "mode: 'c' is not one of 'a', 'b'"),
    ("fast = 1", "fast: expected true or false, got 1"),
    ("no-fast = true", "'no-fast' is not an option"),
    ("steps = 0", "--steps must be >= 1, got 0"),  # the dataclass's own check, as for --steps 0
    ("steps = = 1", "not a TOML file"),
])
def test_a_bad_recipe_is_one_usage_error_naming_the_file_and_key(tmp_path, capsys, text, says):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text + "\n")
    with pytest.raises(SystemExit) as done:
        parse_config(Toy, ["--out", "o", "--config", str(recipe)], prog="prog")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert done.value.code == 2 and last.startswith("prog: error: ") and says in last, last
    if "--steps" not in says:
        assert f"--config {recipe}: " in last


def test_a_missing_recipe_file_is_a_usage_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        parse_config(Toy, ["--out", "o", "--config", str(tmp_path / "absent.toml")], prog="prog")
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"prog: error: --config {tmp_path / 'absent.toml'}: no such file"
