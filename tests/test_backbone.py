"""The standard backbone beside the small embedder: arcface_torch's IResNet (``core.iresnet``).

Its shapes and unit-length output, the multiply-add count (``core.embednet.count_flops``) against
hand-computed figures, a few training steps of ``--backbone iresnet18`` on the demo identities'
build (``tests/test_recognition.py``'s fixtures) and ``load_embedder`` rebuilding it from the
weights file alone, the shipped small embedder still loading as before, and an unknown backbone
refused in one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.embednet import EmbedNet, count_flops, spec_from_state
from core.iresnet import IRESNET_LAYERS, IBasicBlock, IResNet, IResNetSpec
from lmdb_builders.faces import FACES
from lmdb_builders.reader import ShardDataset
from recognition.embedder import embed, load_embedder
from test_recognition import fold2, people  # noqa: F401 (session fixtures: the demo identities' build)
from trainers.embed import cli as embed_cli
from trainers.embed_config import EmbedConfig
from trainers.embed_task import embed_parts
from trainers.train import main as train_main


def iresnet_macs(layers, size: int, dim: int) -> int:
    """IResNet's multiply-adds by hand: the stem's 3x3 conv at full size, then per stage a stride-2
    block (3x3 conv at the stage's input side, strided 3x3 conv and 1x1 shortcut at the output
    side) and two 3x3 convs at the output side per further block, then the FC."""
    total, side, cin = size * size * 64 * 9 * 3, size, 64
    for cout, n in zip((64, 128, 256, 512), layers):
        out = side // 2
        total += side * side * cout * 9 * cin + out * out * cout * (9 * cout + cin)
        total += (n - 1) * 2 * out * out * cout * 9 * cout
        side, cin = out, cout
    return total + 512 * side * side * dim


def test_iresnet_gives_unit_embeddings_and_has_arcface_torchs_depths(one_torch_thread):
    torch.manual_seed(0)
    net = IResNet(IResNetSpec(layers=IRESNET_LAYERS["iresnet18"], input_size=32, dim=16)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out, features = net(x), net.features(x)
    assert out.shape == features.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.allclose(out, features / features.norm(dim=1, keepdim=True), atol=1e-6)
    assert sum(isinstance(m, IBasicBlock) for m in net.modules()) == 8
    assert net.fc.in_features == 512 * 2 * 2  # 32 px halved four times
    assert IResNet(IResNetSpec(layers=IRESNET_LAYERS["iresnet50"], input_size=112, dim=8)).fc.in_features == 512 * 7 * 7
    assert sum(IRESNET_LAYERS["iresnet50"]) == 24 and IResNetSpec(layers=(3, 4, 14, 3)).backbone == "iresnet50"


def test_count_flops_of_a_tiny_net_is_hand_computed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),
                        nn.Flatten(), nn.Linear(16, 5))
    # 4x4 outputs x 4 channels x (3x3x3) + 2x2 x 4 x (3x3x4 / 2 groups) + 16 x 5
    assert count_flops(net, input_size=4) == 64 * 27 + 16 * 18 + 80 == 2096


@pytest.mark.parametrize("backbone, size", [("iresnet18", 32), ("iresnet50", 48)])
def test_count_flops_of_an_iresnet_is_hand_computed(backbone, size, one_torch_thread):
    net = IResNet(IResNetSpec(layers=IRESNET_LAYERS[backbone], input_size=size, dim=16))
    assert count_flops(net) == iresnet_macs(IRESNET_LAYERS[backbone], size, 16)


def test_an_iresnets_spec_is_read_back_from_its_state_dict():
    spec = IResNetSpec(layers=IRESNET_LAYERS["iresnet50"], input_size=48, dim=16, dropout=0.3)
    assert spec_from_state(IResNet(spec).state_dict()) == replace(spec, dropout=0.0)  # dropout has no weights


def test_the_shipped_embedder_still_loads_as_the_small_net():
    embedder = load_embedder("shipped")
    assert isinstance(embedder.net, EmbedNet) and embedder.net.spec.backbone == "small"
    assert (embedder.input_size, embedder.dim) == (64, 128)


def test_iresnet18_trains_on_the_demo_build_and_loads_back_from_its_weights(fold2, tmp_path, one_torch_thread):  # noqa: F811
    cfg = EmbedConfig.tiny(fold2[0].out, tmp_path / "run", backbone="iresnet18", epochs=1, batches_per_epoch=3)
    history = train_main(cfg, embed_parts).history
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    embedder = load_embedder(str(tmp_path / "run"))
    assert isinstance(embedder.net, IResNet) and embedder.net.spec.layers == IRESNET_LAYERS["iresnet18"]
    assert (embedder.input_size, embedder.dim) == (64, 16)  # the build's crop size, --dim of the tiny recipe
    assert embedder.record["recipe"]["backbone"] == "iresnet18"
    crops = np.array(ShardDataset(fold2[0].out, 64, spec=FACES).__getitems__([0, 1, 2])["image"])
    vectors = embed(embedder, crops, flip=True)
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    again = embed(load_embedder(str(Path(cfg.out) / "embedder.pt")), crops, flip=True)
    assert np.array_equal(vectors, again)


def test_an_unknown_backbone_is_refused_in_one_line(capsys):
    with pytest.raises(ValueError, match=r"^--backbone must be one of small, iresnet18, .* got 'resnet'$"):
        EmbedConfig(data="d", out="o", backbone="resnet")
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        embed_cli(["--data", "d", "--out", "o", "--backbone", "resnet"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m trainers.embed: error: argument --backbone: invalid choice: 'resnet'")
