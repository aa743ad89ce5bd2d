"""FID InceptionV3 as a feature network: architecture, safe loading (safetensors / weights_only), errors, CLI."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from guidekit.cli import main
from guidekit.errors import GuidekitError
from guidekit.metrics.evaluate import format_table
from guidekit.metrics.inception import InceptionV3, file_hash, load_inception, read_weights
from guidekit.metrics.network import load_network, network_id


class Planted:
    """A pickle payload: unpickling it calls open(marker, 'w'), i.e. runs code and creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = InceptionV3()
    for m in model.modules():  # He init keeps random activations O(1) through the 48 layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "random.safetensors"))
    torch.save(state, folder / "random.pt")
    return folder


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_architecture_matches_the_fid_inception_layout():
    with torch.device("meta"):
        model = InceptionV3()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_5b.branch1x1.conv.weight"] == (64, 192, 1, 1)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
    assert sum(p.numel() for p in model.parameters()) == 23_850_960  # torchvision Inception3, 1008 classes, no aux
    assert model.metric_tag == "Inception" and model.has_requested_classes is False


def test_preprocess_gray_to_3x299_in_minus1_1(net, images):
    x = net.preprocess(images)
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, net.preprocess(images.expand(-1, 3, -1, -1)))
    with pytest.raises(GuidekitError, match="float images"):
        net.preprocess(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_safetensors_and_pt_load_to_identical_features(net, files, images):
    with torch.no_grad():
        want_f, want_p = net.features_and_probs(images)
        a, b = (load_inception(files / name) for name in ("random.safetensors", "random.pt"))
        fa, pa = a.features_and_probs(images)
        fb, pb = b.features_and_probs(images)
    assert fa.shape == (2, 2048) and pa.shape == (2, 1008)
    assert torch.equal(fa, fb) and torch.equal(pa, pb)
    torch.testing.assert_close(fa, want_f) and torch.testing.assert_close(pa, want_p)
    assert 0.01 < fa.std() < 100 and torch.allclose(pa.sum(1), torch.ones(2))
    assert network_id(a) == f"inception-{file_hash(files / 'random.safetensors')}" != network_id(b)
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_common_key_layouts_load(net, files, tmp_path):
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    loaded = read_weights(tmp_path / "wrapped.pth")
    assert set(loaded) == set(net.state_dict()) and torch.equal(loaded["fc.weight"], state["fc.weight"])
    # pytorch-fid's InceptionV3 wrapper: blocks.I.J; it drops fc, so that is the only problem reported
    wrapper = {k.replace("Conv2d_1a_3x3.", "blocks.0.0.").replace("Mixed_7c.", "blocks.3.2."): v
               for k, v in state.items() if not k.startswith("fc.")}
    save_file(wrapper, str(tmp_path / "wrapper.safetensors"))
    with pytest.raises(GuidekitError, match=r"\(2 problem\(s\)\): missing fc.weight; missing fc.bias\."):
        read_weights(tmp_path / "wrapper.safetensors")
    assert network_id(load_network(inception_weights=files / "random.pt")).startswith("inception-")


def test_wrong_keys_and_shapes_are_named(net, tmp_path):
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    del state["Mixed_5b.branch1x1.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(GuidekitError) as e:
        load_inception(tmp_path / "bad.safetensors")
    msg = str(e.value)
    for part in ("4 problem(s)", "missing Mixed_5b.branch1x1.conv.weight", "unexpected AuxLogits.fc.weight",
                 "fc.weight: file (1000, 2048) vs model (1008, 2048)", "fc.bias: file (1000,) vs model (1008,)",
                 "pt_inception-2015-12-05"):
        assert part in msg, part


@pytest.mark.parametrize("content,message", [
    (b"not a weights file", "neither a safetensors file nor a PyTorch"),
    ("list", "not a state dict"),
    (None, "Inception weights not found"),
])
def test_unreadable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(GuidekitError, match=message):
        load_inception(path)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_planted_pickle_is_refused_without_running(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "inception.pth"
    payload = {"fc.weight": Planted(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(GuidekitError) as e:
        load_inception(path)
    msg = str(e.value)
    assert "refused" in msg and "weights_only=False" in msg and "safetensors.torch.save_file" in msg
    assert "open" in msg and not marker.exists()  # names the global it would call (io.open / builtins.open)
    # the payload is live: an unsafe load runs it
    torch.load(path, weights_only=False) if writer == "torch.save" else pickle.loads(path.read_bytes())
    assert marker.exists()


def sample_folder(path, n, seed, manifest=False):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(path / f"{i:03d}.png")
    if manifest:
        entries = [{"file": f"{i:03d}.png", "class": i % 10} for i in range(n)]
        (path / "manifest.json").write_text(json.dumps({"images": entries}))
    return path


def test_cli_eval_with_inception_weights(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    samples = sample_folder(tmp_path / "samples", 10, 0, manifest=True)
    ref = sample_folder(tmp_path / "ref", 10, 1)
    weights = files / "random.safetensors"
    args = ["eval", str(samples), "--inception-weights", str(weights), "--reference", str(ref), "--device", "cpu",
            "--no-progress", "--json", str(tmp_path / "m.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    for label in ("FID-Inception", "KID-Inception", "IS-Inception", "| n/a |", "accuracy: not measured: Inception"):
        assert label in out, label
    assert "FMNIST" not in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["feature_network"] == "Inception" and m["accuracy"] is None and "per_class_accuracy" not in m
    assert math.isfinite(m["fid"]) and m["fid"] > 0 and 1 <= m["is"] <= 1008
    assert m["reference"].endswith(f"inception-{file_hash(weights)}")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{m['reference']}.safetensors"]


@pytest.mark.parametrize("weights,message", [
    ("missing.safetensors", "Inception weights not found"),
    ("junk.pth", "neither a safetensors file"),
    ("evil.pth", "refused to load"),
])
def test_cli_bad_weights_exit_2_and_write_nothing(tmp_path, capsys, weights, message):
    samples = sample_folder(tmp_path / "samples", 10, 0)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    torch.save({"fc.weight": Planted(tmp_path / "pwned")}, tmp_path / "evil.pth")
    with pytest.raises(SystemExit) as e:
        main(["eval", str(samples), "--inception-weights", str(tmp_path / weights), "--no-progress",
              "--json", str(tmp_path / "m.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "pwned").exists()


def test_evaluator_and_inception_weights_are_exclusive(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path), "--evaluator", "x", "--inception-weights", str(files / "random.pt")])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_table_labels_follow_the_network():
    row = {"n": 10, "fid": 1.0, "kid": 0.1, "is": 2.0, "accuracy": 0.5}
    assert "FID-FMNIST" in format_table([row], key="n") and "not measured" not in format_table([row], key="n")
    inc = dict(row, accuracy=None, feature_network="Inception", accuracy_note="not measured")
    table = format_table([inc], key="n")
    assert "FID-Inception" in table and "IS-Inception" in table and "FMNIST" not in table and "| n/a |" in table
