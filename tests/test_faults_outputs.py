"""Outputs never replace inputs (issue #30, rules 2 and 10), injected at the command line.

An output folder that is, holds or lies inside an input (symbolic links resolved) is refused in
one line naming both options; an output never takes the name of a file the stage did not write;
the committed weights are written only with ``--overwrite-shipped``; an output path that is a file,
``--threads 0`` and foreign files in an align folder are one line with exit code 2, never a
traceback. Each stage runs in a child process (``_cli``), so exit codes and stderr are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from child_env import REPO, child_env
from stage_errors import one_line_error as _one_line_error, usage_error as _usage_error
from core.nets import NET_NAMES, build_net
from core.outputs import OutputError, check_output_apart
from core.weights import SHIPPED_WEIGHTS_DIR


def _cli(module: str, *args, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)






@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random P-, R- and O-Net weights (fast; what they find does not matter here)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name in NET_NAMES:
        torch.save(build_net(name).state_dict(), folder / f"{name}.pt")
    return folder


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Random-noise photos (no face matters here): ``a.jpg``, and ``holiday.png`` beside a
    ``holiday.jpg``, the case where an annotated ``<stem>.jpg`` would replace a photo."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "holiday.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "holiday.jpg"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return folder


@pytest.fixture()
def album(tmp_path) -> Path:
    """A folder of photos to align (names that give distinct crop names)."""
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "a.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "sub" / "b.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return folder


def _detect(capsys, image, weights, out) -> tuple[int, str]:
    from detector.detect import DetectConfig, main

    code = main(DetectConfig(image=str(image), weights=str(weights), out=str(out)))
    return code, capsys.readouterr().err


def _align(images, weights, out, **changes):
    from detector.align import AlignConfig, main

    return main(AlignConfig(images=str(images), weights=str(weights), out=str(out), progress=False, **changes))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the pure check --------------------------------------------------------------------------------


def test_an_output_folder_that_is_holds_or_lies_inside_an_input_is_refused(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(images)
    for out, relation in ((images, "is"), (tmp_path, "holds"), (images / "sub", "lies inside"),
                          (link, "is"), (link / "sub" / "new", "lies inside")):
        with pytest.raises(OutputError, match=f"--out {out} {relation} the input --images {images}"):
            check_output_apart(out, {"--images": images, "--nothing": None})
    with pytest.raises(OutputError, match="holds the input --image"):
        check_output_apart(images, {"--image": images / "a.jpg"})
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_apart(images / "a.jpg", {})
    check_output_apart(tmp_path / "apart", {"--images": images, "--image": images / "a.jpg"})  # beside: fine


# -- detect ----------------------------------------------------------------------------------------


def _refused(code_err, *says):
    code, err = code_err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("python -m detector.detect: error: "), err
    assert all(text in lines[0] for text in says), lines[0]


def test_detect_into_the_photos_folder_is_refused_and_the_photos_are_kept(photos, weights, tmp_path, capsys):
    before = _snapshot(photos)
    _refused(_detect(capsys, photos / "a.jpg", weights, photos), f"--out {photos} holds the input --image")
    _refused(_detect(capsys, photos / "holiday.png", weights, photos), "holds the input --image")
    link = tmp_path / "elsewhere"
    link.symlink_to(photos)
    _refused(_detect(capsys, photos / "a.jpg", weights, link), f"--out {link} holds the input --image")
    _refused(_detect(capsys, photos / "a.jpg", weights, weights), f"--out {weights} is the input --weights")
    assert _snapshot(photos) == before
    # At the command line too: one line, exit code 2.
    _one_line_error(_cli("detector.detect", "--image", photos / "a.jpg", "--weights", weights, "--out", photos),
                    "holds the input --image")
    assert _snapshot(photos) == before


def test_detect_never_replaces_a_file_it_did_not_write_but_replaces_its_own(photos, weights, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.jpg").write_bytes((photos / "holiday.jpg").read_bytes())  # a photo, not an annotated image
    _refused(_detect(capsys, photos / "holiday.png", weights, out),
             f"{out / 'holiday.jpg'} exists and was not written by detector.detect")
    assert (out / "holiday.jpg").read_bytes() == (photos / "holiday.jpg").read_bytes()
    assert not (out / "holiday.json").exists()
    (out / "a.json").write_text('{"note": "mine"}')
    _refused(_detect(capsys, photos / "a.jpg", weights, out), "a.json exists and was not written")
    assert (out / "a.json").read_text() == '{"note": "mine"}'
    fresh = tmp_path / "fresh"
    for _ in range(2):  # a rerun replaces the stage's own outputs
        assert _detect(capsys, photos / "holiday.png", weights, fresh)[0] == 0
    assert json.loads((fresh / "holiday.json").read_text()).keys() == {"faces"}
    assert cv2.imread(str(fresh / "holiday.jpg")).shape == (48, 64, 3)
    assert sorted(p.name for p in fresh.iterdir()) == ["holiday.jpg", "holiday.json"]


# -- an output path that is a file; --threads ------------------------------------------------------


def test_an_output_path_that_is_a_file_is_one_line(photos, album, weights, tmp_path, tiny_wider, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    _refused(_detect(capsys, photos / "a.jpg", weights, a_file), f"--out {a_file} is a file, not a folder")
    _one_line_error(_cli("detector.align", "--images", album, "--weights", weights, "--out", a_file,
                         "--no-progress"), f"--out {a_file} is a file, not a folder")
    _one_line_error(_cli("detector.export", "--weights", weights, "--out", a_file), "is a file, not a folder")
    _one_line_error(_cli("prepare.generate", "--wider-txt", tiny_wider.train_txt, "--wider-images",
                         tiny_wider.train_images, "--out", a_file, "--tiny"), "is a file, not a folder")
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_threads_below_one_is_a_usage_error_naming_the_option(tmp_path, capsys, threads):
    from core.cli import parse_config
    from detector.align import AlignConfig
    from detector.detect import DetectConfig

    for cls, args in ((DetectConfig, ["--image", "a.jpg", "--weights", "shipped", "--out", "o"]),
                      (AlignConfig, ["--images", "photos", "--out", "o"])):
        with pytest.raises(SystemExit) as stop:
            parse_config(cls, [*args, "--threads", threads])
        assert stop.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "error: --threads must be >= 1" in last and threads in last, last
    if threads == "-1":  # the trainers take 0 for torch's default
        from trainers.config import parse_args
        from trainers.embed_config import parse_embed_args

        for parse, args in ((parse_args, ["--net", "pnet"]), (parse_embed_args, ["--data", "d", "--out", "o"])):
            with pytest.raises(SystemExit) as stop:
                parse([*args, "--threads", threads])
            assert stop.value.code == 2
            last = capsys.readouterr().err.strip().splitlines()[-1]
            assert "error: --threads must be >= 0" in last and threads in last, last


# -- align's folder --------------------------------------------------------------------------------


def test_align_refuses_an_output_folder_in_or_around_the_images(album, weights):
    before = _snapshot(album)
    for out, relation in ((album, "is"), (album / "aligned", "lies inside"), (album.parent, "holds")):
        with pytest.raises(OutputError, match=f"--out {out} {relation} the input --images {album}"):
            _align(album, weights, out)
    assert _snapshot(album) == before


@pytest.mark.parametrize("name, content, says", [
    ("settings.json", b"[1, 2]", "holds list"),
    ("settings.json", b'{"weights": "shipped"', "not JSON"),
    ("settings.json", b"\xff\xfe\x00garbage", "not JSON"),
    ("settings.json", b'{"weights": "shipped"}', "without 'align'"),
    ("index.csv", b"name,box\na.jpg,1 2 3 4\n", "its header lacks source"),
    ("index.csv", b"\xff\xd8\xff\xe0binary\x00\x00", "not a CSV text file"),
])
def test_a_foreign_settings_or_index_file_in_the_align_folder_is_one_line(album, weights, tmp_path, name,
                                                                          content, says):
    from detector.align import AlignFolderError

    out = tmp_path / "aligned"
    _align(album, weights, out)
    (out / name).write_bytes(content)
    with pytest.raises(AlignFolderError) as err:
        _align(album, weights, out)
    assert f"{out / name}: not written by detector.align" in str(err.value) and says in str(err.value)
    assert "\n" not in str(err.value)


def test_a_foreign_index_at_the_command_line_is_one_line_and_deletes_nothing(album, weights, tmp_path):
    from detector.align import INDEX_COLUMNS

    out = tmp_path / "aligned"
    _align(album, weights, out)
    before = _snapshot(album)
    row = {c: "" for c in INDEX_COLUMNS} | {"source": "a.jpg", "face": "0", "crop": "../album/a.jpg"}
    (out / "index.csv").write_text(",".join(INDEX_COLUMNS) + "\n" + ",".join(row[c] for c in INDEX_COLUMNS) + "\n")
    _one_line_error(_cli("detector.align", "--images", album, "--weights", weights, "--out", out, "--no-progress",
                         "--overwrite"), f"{out / 'index.csv'}: not written by detector.align",
                    "line 2: crop '../album/a.jpg' is not the crop name")
    assert _snapshot(album) == before


def test_a_folder_that_align_did_not_write_is_not_taken_over(album, weights, tmp_path):
    from detector.align import AlignFolderError

    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b_0.png").write_bytes(b"a picture of mine")
    with pytest.raises(AlignFolderError, match="b_0.png exists and was not written by detector.align"):
        _align(album, weights, out)
    assert (out / "sub" / "b_0.png").read_bytes() == b"a picture of mine"
    (out / "sub" / "b_0.png").unlink()
    (out / "index.csv").write_text("source,face\n")
    with pytest.raises(AlignFolderError, match="index.csv exists but .* has no settings.json"):
        _align(album, weights, out)


# -- the other stages ------------------------------------------------------------------------------


def test_recognition_and_evaluation_stages_refuse_outputs_inside_their_inputs(weights, tmp_path, capsys):
    from evaluation.lfw import cli as lfw_cli
    from evaluation.lfw_cv import CrossValConfig
    from evaluation.lfw_cv import main as cv_main
    from prepare.identities import cli as identities_cli

    people = tmp_path / "people"
    (people / "A").mkdir(parents=True)
    cv2.imwrite(str(people / "A" / "A_0001.jpg"), np.zeros((40, 40, 3), np.uint8))
    before = _snapshot(people)
    assert identities_cli(["--images", str(people), "--out", str(tmp_path / "build"), "--aligned",
                           str(people / "aligned"), "--weights", str(weights), "--no-progress"]) == 2
    assert f"--aligned {people / 'aligned'} lies inside the input --images {people}" in capsys.readouterr().err
    assert identities_cli(["--images", str(people), "--out", str(people / "A"), "--weights", str(weights),
                           "--no-progress"]) == 2
    assert "--out" in (err := capsys.readouterr().err) and "lies inside the input --images" in err
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 1\nA 1 1\n")
    assert lfw_cli(["--images", str(people), "--pairs", str(pairs), "--out", str(people), "--weights", str(weights),
                    "--no-progress"]) == 2
    assert f"--out {people} is the input --images" in capsys.readouterr().err
    res = tmp_path / "fold-1.json"
    res.write_text("{}")
    with pytest.raises(ValueError, match="is one of the results to combine"):
        cv_main(CrossValConfig(out=str(res), folds=(str(res),)))
    assert _snapshot(people) == before and res.read_text() == "{}"


def test_the_committed_weights_are_written_only_with_overwrite_shipped(tmp_path):
    from dataclasses import replace

    from trainers.config import TrainConfig
    from trainers.embed_config import EmbedConfig
    from trainers.preflight import PreflightError, check_outputs

    shipped = SHIPPED_WEIGHTS_DIR / "pnet.pt"
    before = shipped.read_bytes() if shipped.is_file() else None
    for cfg in (TrainConfig(net="pnet", data=str(tmp_path / "d"), out=str(tmp_path / "o"), export=str(shipped)),
                TrainConfig(net="pnet", data=str(tmp_path / "d"), out=str(SHIPPED_WEIGHTS_DIR / "train")),
                EmbedConfig(data=str(tmp_path / "d"), out=str(tmp_path / "o"),
                            export=str(SHIPPED_WEIGHTS_DIR / "embedder.pt"))):
        with pytest.raises(PreflightError, match="--overwrite-shipped"):
            check_outputs(cfg)
        check_outputs(replace(cfg, overwrite_shipped=True))  # asked for: allowed
    with pytest.raises(PreflightError, match="lies inside the input --data"):
        check_outputs(TrainConfig(net="pnet", data=str(tmp_path / "d"), out=str(tmp_path / "d" / "run")))
    proc = _cli("trainers.train", "--net", "pnet", "--data", tmp_path / "d", "--out", tmp_path / "o",
                "--export", shipped)
    _one_line_error(proc, f"--export {shipped} is in the committed weights folder", "--overwrite-shipped")
    assert (shipped.read_bytes() if shipped.is_file() else None) == before
    assert not (tmp_path / "o").exists()
