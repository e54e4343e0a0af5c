"""The command line: generate a small scene, map its dataset folder and its bag, refuse bad inputs."""

import json

import numpy as np
import pytest

from semantic_mapping.cli import main
from semantic_mapping.io.exports import read_ply_vertices


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "scene"
    assert main(["generate", "--seed", "5", "--out", str(out), "--frames", "8"]) == 0
    return out


def test_generate_writes_dataset_bag_and_pictures(generated):
    summary = json.loads((generated / "summary.json").read_text())
    assert summary["frames"] == 8 and summary["scene"]["rooms"] >= 1
    dataset = generated / "dataset"
    assert (dataset / "dataset.json").is_file() and len(list((dataset / "rgb").glob("*.png"))) == 8
    assert len(list((dataset / "labels").glob("*.png"))) == 8 and len(list((dataset / "instances").glob("*.png"))) == 8
    assert (dataset / "ground_truth" / "scene.json").is_file() and (dataset / "ground_truth" / "mesh.npz").is_file()
    assert (generated / "bag" / "metadata.yaml").is_file()
    assert (generated / "frames.png").stat().st_size > 10_000


def test_generate_refuses_non_empty_output(generated, capsys):
    assert main(["generate", "--seed", "5", "--out", str(generated), "--frames", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["dataset", "bag"])
def test_run_maps_folder_and_bag_alike(generated, tmp_path, source):
    out = tmp_path / source
    assert main(["run", str(generated / source), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_integrated"] == 8 and summary["frames_rejected"] == {}
    voxels = read_ply_vertices(out / "voxels.ply")
    assert len(voxels) > 1000
    labelled = voxels["label"] != 255
    assert labelled.mean() > 0.8
    for name in ("map.npz", "mesh.ply", "traversability.png", "traversability.yaml"):
        assert (out / name).is_file(), name


def test_folder_and_bag_give_the_same_map(generated, tmp_path):
    for source in ("dataset", "bag"):
        main(["run", str(generated / source), "--out", str(tmp_path / source)])
    a = read_ply_vertices(tmp_path / "dataset" / "voxels.ply")
    b = read_ply_vertices(tmp_path / "bag" / "voxels.ply")
    assert len(a) == len(b)
    np.testing.assert_array_equal(a["label"], b["label"])


def test_run_refuses_unusable_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    assert main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "error:" in err
    assert main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_refuses_bag_without_needed_topics(generated, tmp_path, capsys):
    code = main(["run", str(generated / "bag"), "--out", str(tmp_path / "o"), "--topic-depth", "/no/such/depth"])
    assert code == 2
    err = capsys.readouterr().err
    assert "/no/such/depth" in err and "/rgb/image" in err
