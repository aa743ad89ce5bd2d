"""The Fashion-MNIST evaluator: shipped weights, shapes, determinism, safe loading, save/load, a tiny training run."""

import json

import pytest
import torch

from guidekit.checkpoints.evaluator import SHIPPED, evaluator_id, load_evaluator, save_evaluator
from guidekit.data import load_dataset
from guidekit.errors import GuidekitError
from guidekit.metrics.evaluator import accuracy, train_evaluator
from guidekit.models.evaluator import Evaluator, EvaluatorConfig

TINY = EvaluatorConfig(widths=(8, 16), depths=(1, 1), feature_dim=16)


@pytest.fixture(scope="module")
def shipped():
    return load_evaluator()


@pytest.fixture(scope="module")
def samples():
    return load_dataset("samples")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = Evaluator(TINY)
    for m in model.modules():  # non-trivial BN statistics, so that a roundtrip that drops them fails
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_shipped_weights_classify_the_embedded_samples(shipped, samples, no_system_data):
    # The 500 embedded samples are Fashion-MNIST *training* images, so this is only a sanity check that the
    # shipped weights load offline and work; the real test accuracy is recorded in the shipped config.json.
    assert not shipped.training
    result = accuracy(shipped, samples)
    assert result["accuracy"] >= 0.85, result
    assert set(result["per_class"]) == set(samples.class_names)
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["metrics"]["test_accuracy"] >= 0.93 and config["evaluator_id"] == evaluator_id(shipped)
    assert (SHIPPED / "model.safetensors").stat().st_size < 2_000_000


def test_features_probs_shapes_and_determinism(shipped, samples):
    x = samples.images(slice(0, 16))
    f = shipped.features(x)
    assert f.shape == (16, shipped.config.feature_dim) and f.dtype == torch.float32
    assert (f >= 0).all()
    p = shipped.probs(x)
    assert p.shape == (16, 10)
    torch.testing.assert_close(p.sum(1), torch.ones(16))
    torch.testing.assert_close(shipped(x).softmax(1), p)
    f2, p2 = shipped.features_and_probs(x)
    assert torch.equal(f2, f) and torch.equal(p2, p)
    assert torch.equal(shipped.features(x), f)  # same input, same output, bit for bit
    torch.testing.assert_close(shipped.features(x[:5]), f[:5], atol=1e-5, rtol=1e-5)  # batch-size independent
    assert evaluator_id(shipped) == evaluator_id(load_evaluator())


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32), (1, 32, 32), (32, 32)])
def test_wrong_shape_is_refused(shipped, shape):
    with pytest.raises(GuidekitError, match=r"\(N, 1, 32, 32\)"):
        shipped.features(torch.zeros(shape))


def test_integer_images_are_refused(shipped):
    with pytest.raises(GuidekitError, match="float"):
        shipped(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_pickles_are_refused(tmp_path):
    for name in ("evaluator.pt", "model.ckpt"):
        (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
        with pytest.raises(GuidekitError, match="pickle"):
            load_evaluator(tmp_path / name)


def test_save_load_roundtrip_and_id(tmp_path):
    model = tiny_model()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    save_evaluator(model, tmp_path / "fp32", {"test_accuracy": 0.5}, dtype="float32", info={"machine": "test"})
    loaded = load_evaluator(tmp_path / "fp32")
    assert loaded.config == model.config and not loaded.training
    saved = model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())  # the weights, bit for bit
    # The same weights in the same layout give the same outputs bit for bit; load_evaluator keeps them channels_last
    # (its speed layout), and another layout may pick another CPU convolution kernel (last bits differ).
    assert torch.equal(loaded(x), model.to(memory_format=torch.channels_last)(x))
    config = json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert config["metrics"] == {"test_accuracy": 0.5} and config["machine"] == "test"
    assert all((tmp_path / "fp32" / n).stat().st_mode & 0o777 == 0o644 for n in ("config.json", "model.safetensors"))
    save_evaluator(model, tmp_path / "fp16", dtype="float16")
    half = load_evaluator(tmp_path / "fp16" / "model.safetensors")  # the file also names its folder
    assert all(v.dtype != torch.float16 for v in half.state_dict().values())
    torch.testing.assert_close(half(x), model(x), atol=2e-2, rtol=2e-2)
    assert evaluator_id(half) == evaluator_id(model) == config["evaluator_id"]
    assert evaluator_id(tiny_model(seed=1)) != evaluator_id(model)
    save_evaluator(tiny_model(seed=1), tmp_path / "fp32")  # replaces the folder atomically
    assert evaluator_id(load_evaluator(tmp_path / "fp32")) == evaluator_id(tiny_model(seed=1))


def test_corrupt_or_mismatched_folders(tmp_path):
    folder = save_evaluator(tiny_model(), tmp_path / "ev")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(GuidekitError, match="model.safetensors.*corrupt"):
        load_evaluator(folder)
    weights.write_bytes(good)
    config = json.loads((folder / "config.json").read_text())
    config["evaluator"]["widths"] = [8, 32]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(GuidekitError, match=r"does not match.*body\.\d+\.0\.weight: file"):
        load_evaluator(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(GuidekitError, match="config.json"):
        load_evaluator(folder)
    with pytest.raises(GuidekitError, match="not found"):
        load_evaluator(tmp_path / "missing")


def test_config_validation():
    d = TINY.to_dict()
    assert EvaluatorConfig.from_dict(json.loads(json.dumps(d))) == TINY
    with pytest.raises(GuidekitError, match="missing"):
        EvaluatorConfig.from_dict({k: v for k, v in d.items() if k != "widths"})
    with pytest.raises(GuidekitError, match="unknown"):
        EvaluatorConfig.from_dict({**d, "width": 3})
    with pytest.raises(GuidekitError, match="depths"):
        EvaluatorConfig.from_dict({**d, "depths": [1]})
    with pytest.raises(GuidekitError, match="class_names"):
        EvaluatorConfig.from_dict({**d, "num_classes": 3})
    with pytest.raises(GuidekitError, match="divisible"):
        EvaluatorConfig.from_dict({**d, "image_size": 30})


def test_train_one_tiny_epoch(samples, no_system_data):
    train, test = samples.subset(slice(0, 400)), samples.subset(slice(400, 500))
    model, metrics = train_evaluator(train, test, epochs=1, batch_size=64, seed=0, progress=False, config=TINY)
    assert {"test_accuracy", "train_seconds", "epochs", "params", "per_class_accuracy", "recipe"} <= set(metrics)
    assert metrics["epochs"] == 1 and 0 <= metrics["test_accuracy"] <= 1 and not model.training
    again, _ = train_evaluator(train, test, epochs=1, batch_size=64, seed=0, progress=False, config=TINY)
    assert evaluator_id(again) == evaluator_id(model)  # seeded: the same recipe gives the same weights
    with pytest.raises(GuidekitError, match="resolution"):
        train_evaluator(load_dataset("samples", resolution=28), test, epochs=1, progress=False, config=TINY)
