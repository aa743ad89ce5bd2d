"""The shipped models load by name, fit the size budget, and the ControlNets are tied to the shipped base."""

import pytest
import torch

from guidekit import zoo
from guidekit.checkpoints import load_classifier, load_controlnet, load_model
from guidekit.cli import main


def test_registry_matches_the_shipped_folders():
    assert set(zoo.names()) == {p.name for p in zoo.WEIGHTS.iterdir() if p.is_dir()}
    assert sum(zoo.size_mb(n) for n in zoo.names()) <= 25.0  # issue 7's budget for all shipped weights
    kinds = {e["kind"] for e in zoo.registry().values()}
    assert kinds == {"model", "classifier", "controlnet"}


def test_every_zoo_model_loads_by_name():
    reg = zoo.registry()
    base = load_model("fmnist-cfg")
    assert base.net.config.num_classes == 10 and base.class_names[1] == "Trouser"
    for name, entry in reg.items():
        if entry["kind"] == "controlnet":
            cn = load_controlnet(name, load_model(entry["base"]).net)  # fingerprint of the fp16 base matches
            assert cn.condition == entry["condition"]
        elif entry["kind"] == "classifier":
            clf = load_classifier(name)
            assert clf.net(torch.zeros(2, 1, 32, 32), torch.tensor([10.0, 900.0])).shape == (2, 10)


def test_zoo_cli_lists_and_resolves(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in zoo.names())
    assert main(["zoo", "path", "fmnist-cfg"]) == 0
    assert capsys.readouterr().out.strip().endswith("fmnist-cfg")
    assert main(["zoo", "path", "nope"]) == 2


def test_a_path_that_exists_wins_over_a_zoo_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fmnist-cfg").mkdir()
    assert zoo.resolve("fmnist-cfg") == tmp_path.joinpath("fmnist-cfg").relative_to(tmp_path)
    with pytest.raises(Exception):
        load_model("fmnist-cfg")  # the local empty folder is taken, and refused as not a model
