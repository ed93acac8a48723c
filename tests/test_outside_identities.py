"""Builds of several identity roots (LFW and an outside set): identities kept apart, a flat folder
and an identity list as a root, and the left-out fold's people removed from every root by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from annotations.celeba import parse_identity_list
from annotations.errors import AnnotationError
from annotations.identities import normalised_name
from demo.identities import DemoIdentitiesConfig, build
from prepare.identities import IdentityDataConfig
from prepare.identities import cli as identities_cli
from prepare.identities import main as identities_main
from prepare.identity_links import IdentityLinksConfig
from prepare.identity_links import cli as links_cli
from prepare.identity_links import main as links_main
from trainers.embed_config import EmbedConfig
from trainers.embed_task import training_record


@pytest.mark.parametrize("a, b", [("José_Maria Aznar", "jose maria aznar"), ("JOSE-MARIA  AZNAR", "jose_maria_aznar"),
                                  ("Zoë_Ball", "ZOE BALL"), ("Demo_Person_03", "démo-person 03")])
def test_names_equal_once_normalised(a, b):
    assert normalised_name(a) == normalised_name(b) == normalised_name(b).strip()


def test_normalised_name_is_exact():
    assert normalised_name("José_Maria Aznar") == "jose maria aznar"
    assert normalised_name(" Straße__-_Müller ") == "strasse muller"
    assert normalised_name("Ann") != normalised_name("Anne")


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    return build(DemoIdentitiesConfig(out=str(tmp_path_factory.mktemp("people"))))


def image(people: Path, k: int, i: int) -> Path:
    return people / "images" / f"Demo_Person_{k:02d}" / f"Demo_Person_{k:02d}_{i:04d}.jpg"


LIST = "image identity\n000001.jpg Demo_Person_00\n000002.jpg Demo_Person_00\n000003.jpg Demo_Person_00\n" \
       "000004.jpg Démo-person_03\n000005.jpg Démo-person_03\n000006.jpg 7\n000007.jpg 7\n000099.jpg 8\n"


@pytest.fixture(scope="module")
def celeb(people, tmp_path_factory) -> Path:
    """A CelebA-like root: a flat folder, an identity list naming an absent image too, linked."""
    tmp = tmp_path_factory.mktemp("celeb")
    flat = tmp / "flat"
    flat.mkdir()
    # Demo_Person_00 here is another face (person 4's) than the first root's (4_0002: no face found)
    for n, (k, i) in enumerate([(4, 1), (4, 3), (4, 4), (3, 1), (3, 2), (6, 1), (6, 2)], start=1):
        shutil.copy(image(people, k, i), flat / f"{n:06d}.jpg")
    (tmp / "identity.txt").write_text(LIST)
    links_main(IdentityLinksConfig(images=str(flat), list=str(tmp / "identity.txt"), out=str(tmp / "celeb")))
    return tmp / "celeb"


@pytest.fixture(scope="module")
def two_roots(people, celeb, tmp_path_factory) -> tuple[IdentityDataConfig, dict]:
    out = tmp_path_factory.mktemp("build")
    cfg = IdentityDataConfig(images=(str(people / "images"), str(celeb)), out=str(out / "fold-2"),
                             aligned=str(out / "aligned"), people=str(people / "people.txt"), fold=2, progress=False)
    return cfg, identities_main(cfg)


def test_flat_folder_and_list_become_an_identity_root(celeb):
    record = json.loads((celeb / "links.json").read_text())
    assert (record["listed"], record["linked"], record["identities"], record["listed_absent"]) == (8, 7, 3, 1)
    assert sorted(p.name for p in celeb.iterdir()) == ["7", "Demo_Person_00", "Démo-person_03", "links.json"]
    link = celeb / "Demo_Person_00" / "000001.jpg"
    assert link.is_symlink() and link.resolve() == (celeb.parent / "flat" / "000001.jpg").resolve()


def test_two_roots_keep_a_shared_name_apart_and_leave_out_the_fold_by_name(two_roots):
    cfg, manifest = two_roots
    names = dict((n, c) for n, c in manifest["identities"])
    # fold 2 holds the odd people: the first root keeps the even ones; the outside set loses its
    # spelling of Demo_Person_03 and keeps its own Demo_Person_00 beside the first root's
    assert sorted(names) == sorted([f"Demo_Person_{k:02d}" for k in range(0, 12, 2)] + ["celeb/7", "celeb/Demo_Person_00"])
    assert names["celeb/Demo_Person_00"] == 3 and names["celeb/7"] == 2
    report = manifest["report"]
    assert report["outside_matching_left_out"] == 1 and report["outside_matching_names"] == ["celeb/Démo-person_03"]
    assert report["excluded_people"] == 7 and manifest["config"]["outside_roots"] == ["celeb"]
    first, outside = report["roots"]
    assert (outside["label"], outside["read"], outside["used"], outside["packed"]) == (
        "celeb", {"images": 7, "identities": 3}, {"images": 5, "identities": 2}, {"faces": 5, "identities": 2})
    assert first["label"] == "images" and first["packed"]["identities"] == 6 and first["read"]["identities"] == 12
    assert first["packed"]["faces"] + outside["packed"]["faces"] == manifest["num_images"]
    assert [k for k in manifest["images"] if k.startswith("celeb/")] == [
        "celeb/7/000006.jpg", "celeb/7/000007.jpg", *[f"celeb/Demo_Person_00/00000{i}.jpg" for i in (1, 2, 3)]]
    # the embedder's record says which roots it saw
    record = training_record({**manifest, "_path": str(Path(cfg.out) / "manifest.json")}, EmbedConfig.tiny(cfg.out, "x"))
    assert record["build"]["outside_roots"] == ["celeb"] and "celeb/Demo_Person_00" in record["people"]


def test_each_root_aligns_into_its_own_cache(people, two_roots, tmp_path):
    """The same relative path in two roots is two images: each root's crops have their own folder."""
    cfg, _ = two_roots
    other = tmp_path / "other" / "Demo_Person_00"
    other.mkdir(parents=True)
    for i in (1, 2):  # the first root's paths, another person's faces
        shutil.copy(image(people, 8, i), other / f"Demo_Person_00_{i:04d}.jpg")
    built = identities_main(IdentityDataConfig(images=(cfg.images[0], str(other.parent)), out=str(tmp_path / "b"),
                                               aligned=cfg.aligned, progress=False))
    assert built["report"]["align"]["done_before"] == 30  # the first root's cache: the fold-2 build's crops reused
    first = Path(cfg.aligned) / "Demo_Person_00" / "Demo_Person_00_0001_0.png"
    second = Path(f"{cfg.aligned}-other") / "Demo_Person_00" / "Demo_Person_00_0001_0.png"
    assert first.is_file() and second.is_file() and first.read_bytes() != second.read_bytes()
    assert dict(built["identities"])["other/Demo_Person_00"] == 2


def test_two_roots_of_one_name_are_refused(people, tmp_path, capsys):
    twin = tmp_path / "x" / "images"
    twin.parent.mkdir()
    twin.symlink_to(people / "images")
    assert identities_cli(["--images", str(people / "images"), str(twin), "--out", str(tmp_path / "b"),
                           "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "are both named 'images'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text, line, message", [
    ("image identity\n000001.jpg 1\n000002.jpg\n", 3, "expected 'image identity' (two fields), got '000002.jpg'"),
    ("000001.jpg 1\nsub/000002.jpg 1\n", 2, "image 'sub/000002.jpg' is not a plain file name"),
    ("000001.jpg 1\n000002.txt 1\n", 2, "image '000002.txt' has no image suffix"),
    ("000001.jpg 1\n000001.jpg 2\n", 2, "image 000001.jpg is listed twice (first at line 1)"),
])
def test_a_bad_list_line_is_one_line_naming_file_and_line(tmp_path, capsys, text, line, message):
    listed = tmp_path / "identity.txt"
    listed.write_text(text)
    with pytest.raises(AnnotationError) as err:
        parse_identity_list(listed)
    assert str(err.value).startswith(f"{listed}:{line}: {message}")
    (tmp_path / "flat").mkdir()
    assert links_cli(["--images", str(tmp_path / "flat"), "--list", str(listed), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m prepare.identity_links: error: {listed}:{line}: {message}" + err[0].split(message, 1)[1]]
    assert not (tmp_path / "o").exists()


def test_a_folder_not_written_by_the_linker_is_not_replaced(celeb, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    listed = celeb.parent / "identity.txt"
    assert links_cli(["--images", str(celeb.parent / "flat"), "--list", str(listed), "--out", str(tmp_path / "mine")]) == 2
    assert "was not written by python -m prepare.identity_links" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
