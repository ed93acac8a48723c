"""``make original-weights``: the state dicts come out of a facenet-pytorch wheel (a fake one here,
built from this project's nets, so no network is needed) and are checked to load."""

import io
import zipfile

import pytest
import torch

from core.nets import build_net
from trainers.original_weights import NETS, OriginalWeightsConfig, OriginalWeightsError, extract_weights, main


def fake_wheel(path, nets=NETS, extra=()):
    with zipfile.ZipFile(path, "w") as z:
        for net in nets:
            buf = io.BytesIO()
            torch.save(build_net(net, landmark_head=False).state_dict(), buf)
            z.writestr(f"facenet_pytorch/data/{net}.pt", buf.getvalue())
        for name, data in extra:
            z.writestr(name, data)
    return path


def test_weights_are_extracted_checked_and_the_package_unpacked(tmp_path):
    wheel = fake_wheel(tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl",
                       extra=[("facenet_pytorch/__init__.py", "x = 1\n"), ("facenet_pytorch-2.6.0.dist-info/RECORD", "")])
    files = main(OriginalWeightsConfig(out=str(tmp_path / "w"), wheel=str(wheel), package_dir=str(tmp_path / "pkg")))
    assert [f.name for f in files] == ["pnet.pt", "rnet.pt", "onet.pt"]
    state = torch.load(tmp_path / "w" / "onet.pt", weights_only=True)
    assert "dense6_3.weight" in state
    assert (tmp_path / "pkg" / "facenet_pytorch" / "__init__.py").read_text() == "x = 1\n"
    assert not (tmp_path / "pkg" / "facenet_pytorch-2.6.0.dist-info").exists()
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["onet.pt", "pnet.pt", "rnet.pt"]  # no temporaries


def test_a_wheel_without_the_weights_is_refused(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", nets=("pnet", "rnet"))
    with pytest.raises(OriginalWeightsError, match="onet.pt"):
        extract_weights(wheel, tmp_path / "out")


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path):
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(OriginalWeightsError, match="not a readable wheel"):
        extract_weights(tmp_path / "bad.whl", tmp_path / "out")


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for net in NETS:
            buf = io.BytesIO()
            torch.save(build_net("pnet" if net == "rnet" else net, landmark_head=False).state_dict(), buf)
            z.writestr(f"facenet_pytorch/data/{net}.pt", buf.getvalue())
    with pytest.raises(OriginalWeightsError, match="rnet.pt: does not load into rnet"):
        main(OriginalWeightsConfig(out=str(tmp_path / "w"), wheel=str(wheel)))
