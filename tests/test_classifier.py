"""Noise-aware classifier: shapes, time conditioning, training on a toy problem, checkpoints, exact resume."""

import csv
import json

import pytest
import torch

from guidekit.guidance.classifier import log_prob_grad
import torch.nn.functional as F

from guidekit import GuidekitError
from guidekit.checkpoints import load_classifier, save_classifier, write_folder
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.models.classifier import ClassifierConfig, NoisyClassifier
from guidekit.training.classifier_trainer import (ClassifierTrainConfig, ClassifierTrainer, bucket_edges,
                                                  evaluate_buckets)
from resume_check import straight_and_resumed

@pytest.fixture(autouse=True)
def one_thread():
    """Micro models: one thread avoids thread-pool overhead (and thrashing on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MICRO = dict(image_size=16, channels=8, norm_groups=4)  # tiny preset, narrower, 16x16


def micro(pool="attention", num_classes=2, **overrides):
    return ClassifierConfig.from_preset("tiny", num_classes, pool=pool, **{**MICRO, **overrides})


def make(pool="attention", seed=0, randomize=True, **overrides):
    """A micro classifier; randomize=True perturbs every weight so the zero-inits hide nothing."""
    torch.manual_seed(seed)
    net = NoisyClassifier(micro(pool, **overrides))
    if randomize:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return net


def toy(n=64, size=16, labelled=True):
    """Two classes: images all -0.8 ('dark', label 0) or all +0.8 ('bright', label 1)."""
    y = torch.arange(n) % 2
    pixels = torch.where(y[:, None, None, None] == 1, 230, 25).to(torch.uint8).expand(n, 1, size, size)
    if not labelled:
        return ImageDataset(pixels.contiguous(), None, None, "toy-unlabelled")
    return ImageDataset(pixels.contiguous(), y, ["dark", "bright"], "toy")


def fast(**overrides):
    args = dict(steps=30, batch_size=16, lr=3e-3, warmup=0, weight_decay=0.0, log_every=10, save_every=1000,
                eval_size=32)
    return ClassifierTrainConfig(**{**args, **overrides})


# ---- the network ----

@pytest.mark.parametrize("pool", ["attention", "avg"])
def test_shapes(pool):
    net = make(pool).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 1, 16, 16), torch.tensor([0.0, 499.5, 999.0])).shape == (3, 2)
        assert net(torch.randn(2, 1, 16, 16), 250.25).shape == (2, 2)  # scalar, fractional t
        assert net(torch.randn(2, 1, 16, 16), torch.tensor([7])).shape == (2, 2)  # (1,) integer t
        assert net(torch.randn(1, 1, 32, 24), 3).shape == (1, 2)  # other sizes (positions are resized)
        assert net(torch.randn(2, 1, 16, 16, dtype=torch.float64), 3).dtype == torch.float32
    x = torch.randn(2, 1, 16, 16)
    g = log_prob_grad(net, x, torch.full((2,), 100.0), torch.tensor([0, 1]))
    assert g.shape == x.shape and g.dtype == torch.float32 and torch.isfinite(g).all()


def test_no_class_embedding_and_no_decoder():
    net = make(randomize=False)
    names = [k for k, _ in net.named_parameters()]
    assert net.trunk.class_embed is None
    assert not any(k.startswith(("trunk.up.", "trunk.out.", "trunk.class_embed")) for k in names)


def test_untrained_classifier_is_uniform():
    net = make(randomize=False)  # zero-initialized head
    with torch.no_grad():
        p = net(torch.randn(4, 1, 16, 16), 10).softmax(-1)
    assert torch.allclose(p, torch.full_like(p, 0.5))


def test_time_conditioning_matters():
    net = make().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a, b, c = net(x, 10.0), net(x, 900.0), net(x, 10.0)
    assert torch.equal(a, c)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("pool", ["attention", "avg"])
def test_every_parameter_gets_a_gradient(pool):
    net = make(pool)
    loss = F.cross_entropy(net(torch.randn(4, 1, 16, 16), torch.tensor([1.0, 300.0, 600.0, 900.0])),
                           torch.tensor([0, 1, 0, 1]))
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_grad_log_prob_points_uphill():
    net = make().eval()
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([0, 1])
    g = log_prob_grad(net, x, torch.full((2,), 50.0), y)
    logp = lambda z: net(z, 50.0).log_softmax(-1).gather(1, y[:, None]).sum()  # noqa: E731
    with torch.no_grad():
        assert logp(x + 1e-2 * g / g.norm()) > logp(x)


# ---- configs ----

def test_config_roundtrip_and_validation():
    cfg = ClassifierConfig.from_preset("small", num_classes=10, pool="avg", image_size=32, in_channels=1)
    assert cfg.unet.num_classes == 0 and cfg.num_classes == 10 and cfg.image_size == 32
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ClassifierConfig.from_dict(d) == cfg
    with pytest.raises(GuidekitError, match="unknown ClassifierConfig key"):
        ClassifierConfig.from_dict({**d, "depth": 3})
    with pytest.raises(GuidekitError, match=r"missing key\(s\) \['pool'\]"):
        ClassifierConfig.from_dict({k: v for k, v in d.items() if k != "pool"})
    with pytest.raises(GuidekitError, match="pool must be one of"):
        ClassifierConfig.from_dict({**d, "pool": "max"})
    with pytest.raises(GuidekitError, match="num_classes must be an integer >= 2"):
        ClassifierConfig.from_dict({**d, "num_classes": 1})
    with pytest.raises(GuidekitError, match="unet.num_classes must be 0"):
        ClassifierConfig(UNetConfig.preset("tiny", num_classes=10), 10).validate()
    with pytest.raises(GuidekitError, match="unknown UNet preset"):
        ClassifierConfig.from_preset("huge", 10)
    with pytest.raises(GuidekitError, match="needs a ClassifierConfig"):
        NoisyClassifier(UNetConfig.preset("tiny"))


# ---- bad inputs ----

def test_bad_inputs_raise():
    net = make(randomize=False)
    cases = [
        (lambda: net(torch.randn(2, 3, 16, 16), 5), r"x must be a \(B, 1, H, W\)"),
        (lambda: net(torch.randn(1, 16, 16), 5), r"x must be a \(B, 1, H, W\)"),
        (lambda: net(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), 5), "float tensor"),
        (lambda: net(torch.randn(2, 1, 15, 16), 5), "divisible by 2"),
        (lambda: net(torch.randn(2, 1, 16, 16), torch.tensor([1, 2, 3])), r"t must be a scalar or have shape \(2,\)"),
        (lambda: net(torch.randn(2, 1, 16, 16), 1000.0), r"t must lie in \[-1, 1000\)"),
        (lambda: net(torch.randn(2, 1, 16, 16), float("nan")), "t must lie in"),
        (lambda: log_prob_grad(net, torch.randn(2, 1, 16, 16), torch.full((2,), 5.0), torch.tensor([0, 2])),
         r"y labels must be in \[0, 1\]"),
        (lambda: log_prob_grad(net, torch.randn(2, 1, 16, 16), torch.full((2,), 5.0), torch.tensor([0.0, 1.0])),
         "integer tensor"),
    ]
    for fn, pattern in cases:
        with pytest.raises(GuidekitError, match=pattern):
            fn()


def test_bad_datasets_and_configs_raise(tmp_path):
    sched = NoiseSchedule.linear()
    with pytest.raises(GuidekitError, match="has no labels"):
        ClassifierTrainer(micro(), toy(labelled=False), sched, fast(), tmp_path / "a")
    with pytest.raises(GuidekitError, match="num_classes=3.*has 2 classes"):
        ClassifierTrainer(micro(num_classes=3), toy(), sched, fast(), tmp_path / "b")
    with pytest.raises(GuidekitError, match="expects 1×32² images"):
        ClassifierTrainer(micro(image_size=32), toy(), sched, fast(), tmp_path / "c")
    with pytest.raises(GuidekitError, match="num_train_timesteps=1000, the schedule 100"):
        ClassifierTrainer(micro(), toy(), NoiseSchedule.linear(100), fast(), tmp_path / "d")
    with pytest.raises(GuidekitError, match="eval_dataset toy-unlabelled has no labels"):
        ClassifierTrainer(micro(), toy(), sched, fast(), tmp_path / "e", eval_dataset=toy(labelled=False))
    with pytest.raises(GuidekitError, match="ema_decay must lie in"):
        ClassifierTrainer(micro(), toy(), sched, fast(ema_decay=1.0), tmp_path / "f")
    with pytest.raises(GuidekitError, match="steps must be an integer >= 1"):
        fast(steps=0).validate()
    with pytest.raises(GuidekitError, match="has no labels"):
        evaluate_buckets(make(), toy(labelled=False), sched)
    with pytest.raises(GuidekitError, match="buckets must be an integer"):
        evaluate_buckets(make(), toy(), sched, buckets=0)
    assert not any(tmp_path.iterdir())


# ---- training ----

def test_learns_toy_problem_and_logs_buckets(tmp_path):
    ds, sched = toy(), NoiseSchedule.linear()
    trainer = ClassifierTrainer(micro(), ds, sched, fast(), tmp_path, eval_dataset=toy(32))
    before = evaluate_buckets(trainer.raw, ds, sched, n=64)
    assert before[0]["accuracy"] == 0.5  # uniform logits: always class 0
    out = trainer.fit(progress=False)
    assert out == tmp_path / "model" and (out / "model.safetensors").exists()
    after = evaluate_buckets(trainer.raw, ds, sched, n=64)
    assert after[0]["accuracy"] > 0.9 and after[1]["accuracy"] > 0.9, after
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["step"] for r in rows] == ["10", "20", "30"]
    assert {"acc_t0_250", "acc_t250_500", "acc_t500_750", "acc_t750_1000", "best_acc", "best_step"} <= rows[0].keys()
    assert all(r["acc_source"] == "heldout" for r in rows)
    assert float(rows[-1]["acc_t0_250"]) > 0.9
    assert float(rows[-1]["best_acc"]) == max(float(r["acc_mean"]) for r in rows)
    assert trainer.last_buckets[0]["t_range"] == (0, 250)


def test_evaluate_buckets():
    ds, sched = toy(20), NoiseSchedule.linear(100)
    net = NoisyClassifier(micro(num_train_timesteps=100))
    res = evaluate_buckets(net, ds, sched, n=50, buckets=3, seed=1, batch_size=8)
    assert [r["t_range"] for r in res] == [(0, 33), (33, 67), (67, 100)]
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 20 for r in res)
    assert res == evaluate_buckets(net, ds, sched, n=50, buckets=3, seed=1)  # fixed draws
    assert net.training  # mode restored
    assert bucket_edges(1000, 4) == [0, 250, 500, 750, 1000]


@pytest.mark.parametrize("ema, heldout", [(0.0, True), (0.9, False)])
def test_resume_equals_uninterrupted_run(tmp_path, ema, heldout):
    ds = toy(40)
    kw = dict(eval_dataset=toy(8)) if heldout else {}
    make_run = lambda steps, out, resume=False: ClassifierTrainer(  # noqa: E731
        micro(), ds, NoiseSchedule.linear(), fast(steps=steps, batch_size=8, save_every=3, log_every=2, keep=5,
                                                  ema_decay=ema, eval_size=8), tmp_path / out, resume=resume, **kw)
    straight, resumed = straight_and_resumed(make_run, 6, 3)
    if ema:
        for k, v in straight.ema.state_dict().items():
            assert torch.equal(v, resumed.ema.state_dict()[k]), k
    # every logged value but the timings agrees (step 4's window straddles the checkpoint at step 3)
    rows = lambda run: {r["step"]: {k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")}  # noqa: E731
                        for r in csv.DictReader(open(tmp_path / run / "log.csv"))}
    a, b = rows("a"), rows("b")
    assert a.keys() == {"2", "4", "6"} and a["4"] == b["4"] and a["6"] == b["6"]
    loaded = load_classifier(tmp_path / "b")
    exported = straight.ema.state_dict() if ema else straight.raw.state_dict()
    for k, v in exported.items():
        assert torch.equal(loaded.net.state_dict()[k], v), k


def test_new_run_refuses_existing_checkpoints_and_resume_checks_config(tmp_path):
    run = ClassifierTrainer(micro(), toy(16), NoiseSchedule.linear(), fast(steps=1, batch_size=8), tmp_path)
    run.fit(progress=False)
    with pytest.raises(GuidekitError, match="--resume"):
        ClassifierTrainer(micro(), toy(16), NoiseSchedule.linear(), fast(steps=2, batch_size=8), tmp_path)
    with pytest.raises(GuidekitError, match="another classifier config"):
        ClassifierTrainer(micro(pool="avg"), toy(16), NoiseSchedule.linear(), fast(steps=2, batch_size=8), tmp_path,
                          resume=True)
    with pytest.raises(GuidekitError, match="no checkpoint found"):
        ClassifierTrainer(micro(), toy(16), NoiseSchedule.linear(), fast(), tmp_path / "new", resume=True)


# ---- model folders ----

def test_save_load_roundtrip(tmp_path):
    net, sched = make().eval(), NoiseSchedule.cosine()
    folder = save_classifier(net, tmp_path / "clf", sched, ["dark", "bright"])
    assert json.loads((folder / "config.json").read_text())["format"] == "guidekit-classifier/1"
    loaded = load_classifier(folder)
    assert loaded.class_names == ["dark", "bright"] and loaded.schedule.kind == "cosine"
    assert loaded.net.config == net.config and not loaded.net.training
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.net(x, 123.5), net(x, 123.5))
    with pytest.raises(GuidekitError, match="3 class names for a classifier with 2 classes"):
        save_classifier(net, tmp_path / "bad", sched, ["a", "b", "c"])


def test_refuses_pickles_unets_and_corrupt_files(tmp_path):
    pickled = tmp_path / "classifier.pt"
    torch.save({"a": 1}, pickled)
    with pytest.raises(GuidekitError, match="pickled"):
        load_classifier(pickled)
    write_folder(tmp_path / "unet", {"config.json": {"format": "guidekit-unet/1"}})
    with pytest.raises(GuidekitError, match="that is a diffusion model"):
        load_classifier(tmp_path / "unet")
    folder = save_classifier(make(), tmp_path / "clf", NoiseSchedule.linear())
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(GuidekitError, match="corrupt or not safetensors"):
        load_classifier(folder)
    save_classifier(make(pool="avg"), tmp_path / "avg", NoiseSchedule.linear())
    (tmp_path / "avg" / "config.json").write_text((folder / "config.json").read_text())  # attention config
    with pytest.raises(GuidekitError, match="missing pool.pos"):
        load_classifier(tmp_path / "avg")
