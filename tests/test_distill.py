"""Guidance distillation, stage one (Meng et al. 2023): the w-embedding, the student, `guidekit distill`."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from guidekit import GuidekitError
from guidekit.checkpoints import load_model, model_files, write_folder
from guidekit.cli import main
from guidekit.data import load_dataset
from guidekit.diffusion import NULL, ModelDenoiser, NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.models.unet import UNet
from guidekit.training.distill_trainer import student_from
from resume_check import straight_and_resumed

MICRO = dict(channels=8, norm_groups=4, num_train_timesteps=100)


def random_unet(seed: int, **over) -> UNet:
    """A tiny v-predicting UNet with every weight (the zero-initialised ones too) perturbed: cond ≠ uncond."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig.preset("tiny", **{"num_classes": 10, "prediction_type": "v", **MICRO, **over}))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net.eval()


def save_model(folder, net: UNet, **extra):
    """A model folder for net (T = 100, the Fashion-MNIST class names), config.json extended by extra."""
    files = model_files(net, NoiseSchedule.linear(100), load_dataset("samples").class_names, net.state_dict())
    files["config.json"].update(extra)
    write_folder(folder, files)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher", random_unet(0))


@pytest.fixture(scope="module")
def run(teacher_dir, tmp_path_factory):
    """A 40-step distillation of the teacher on the embedded samples, logging every step."""
    out = tmp_path_factory.mktemp("distill") / "run"
    assert main(["distill", str(teacher_dir), "--w-range", "0,4", "--data", "samples", "--steps", "40",
                 "--batch-size", "16", "--lr", "3e-3", "--warmup", "0", "--ema-decay", "0.5", "--log-every", "1",
                 "--save-every", "20", "--no-progress", "--out", str(out)]) == 0
    return out


def draws(n=48, seed=1):
    """Held-out (x_t, t, y): sample images noised at uniform t, their own labels."""
    ds, g = load_dataset("samples"), torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    t = torch.randint(100, (n,), generator=g)
    ab = NoiseSchedule.linear(100).alpha_bar(t).float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * ds.images(idx) + (1 - ab).sqrt() * torch.randn(n, 1, 32, 32, generator=g)
    return x_t, t, ds.labels[idx]


def cfg_eps(model, x_t, t, y, w: float) -> torch.Tensor:
    """The teacher's ε̂_w = (1+w)·ε(x, c) − w·ε(x, ∅), from two plain denoiser calls."""
    den = model.denoiser()
    cond, uncond = den(x_t, t, {"y": y}), den(x_t, t, {"y": torch.full_like(y, NULL)})
    return cond + w * (cond - uncond)


def student_eps(student: UNet, schedule, x_t, t, y, w: float) -> torch.Tensor:
    """The student's ε at w, through ModelDenoiser (cond["w"] reaches the net as w=)."""
    c = student.config
    return ModelDenoiser(student, schedule, c.prediction_type, c.num_classes)(
        x_t, t, {"y": y, "w": torch.full((len(y),), float(w))})


@torch.no_grad()
def test_fresh_student_is_the_teacher_at_every_w(teacher_dir):
    teacher = load_model(teacher_dir)
    student = student_from(teacher.net).eval()
    x_t, t, y = draws(8)
    want = teacher.denoiser()(x_t, t, {"y": y})
    assert want.abs().mean() > 0.1  # a teacher whose output is not trivially zero
    for w in (0.0, 0.5, 2.0, 4.0, 7.5):
        assert (student_eps(student, teacher.schedule, x_t, t, y, w) - want).abs().max() < 1e-6, w


def test_distill_run_lowers_the_loss_and_exports_a_student(run, teacher_dir):
    losses = [float(r["loss"]) for r in csv.DictReader(open(run / "log.csv"))]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    student = load_model(run)
    assert student.w_range == (0.0, 4.0) and student.net.config.guidance_embed
    assert student.distilled["teacher"] == str(teacher_dir.resolve())
    assert student.distilled["method"] == "Meng et al. 2023 stage one"
    assert load_model(teacher_dir).w_range is None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000020", "step-00000040"]


@torch.no_grad()
def test_trained_student_is_closer_to_the_teachers_cfg(run, teacher_dir):
    """Held-out draws, in ε: the fresh student (= the conditional teacher) is off by w·(ε_c − ε_∅); 40 steps cut
    that error where it is large (w ≥ 2; near w = 0 the fresh student is nearly exact already)."""
    teacher, trained = load_model(teacher_dir), load_model(run)
    fresh = student_from(teacher.net).eval()
    x_t, t, y = draws()
    for w in (2.0, 3.0, 4.0):
        goal = cfg_eps(teacher, x_t, t, y, w)
        err_fresh = (student_eps(fresh, teacher.schedule, x_t, t, y, w) - goal).pow(2).mean()
        err_trained = (student_eps(trained.net, trained.schedule, x_t, t, y, w) - goal).pow(2).mean()
        assert err_trained < 0.75 * err_fresh, (w, err_fresh, err_trained)


def test_resume_equals_an_uninterrupted_run(teacher_dir, tmp_path):
    from guidekit.training.config import DistillConfig
    from guidekit.training.distill_trainer import DistillTrainer

    ds = load_dataset("samples").subset(torch.arange(40))
    make = lambda steps, out, resume=False: DistillTrainer(  # noqa: E731
        load_model(teacher_dir), "t", ds, DistillConfig(steps=steps, batch_size=4, save_every=2, log_every=2),
        tmp_path / out, resume=resume)
    straight, _ = straight_and_resumed(make, 4, 2)
    assert straight.raw.guidance_embed[2].weight.abs().sum() > 0  # the w-embedding did train


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("value,needle", [("4,0", "needs 0 <= lo < hi"), ("-1,2", "needs 0 <= lo < hi"),
                                          ("0,inf", "not two finite numbers"), ("2", "not two finite numbers"),
                                          ("a,b", "is not two numbers")])
def test_bad_w_range_exits_2(teacher_dir, tmp_path, capsys, value, needle):
    assert _run(["distill", str(teacher_dir), f"--w-range={value}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--w-range {value!r}" in err and needle in err and "e.g. --w-range 0,4" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def bad_teachers(tmp_path_factory, run):
    root = tmp_path_factory.mktemp("bad-teachers")
    diffusers = root / "diffusers-unet"
    diffusers.mkdir()
    (diffusers / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    text = UNetConfig.preset("tiny", text_dim=6, **MICRO)
    return {"unconditional": (save_model(root / "uncond", random_unet(1, num_classes=0)), "is unconditional"),
            "distilled": (str(run), "is itself a guidance-distilled student"),
            "diffusers": (diffusers, "supports only guidekit UNet models"),
            "text": (save_model(root / "text", UNet(text), text={"encoder": "x"}), "class-conditional teachers only")}


@pytest.mark.parametrize("kind", ["unconditional", "distilled", "diffusers", "text"])
def test_unusable_teacher_exits_2(bad_teachers, tmp_path, capsys, kind):
    path, needle = bad_teachers[kind]
    assert _run(["distill", str(path), "--data", "samples", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_used_out_and_contradicting_resume_exit_2(teacher_dir, run, tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("mine")
    assert _run(["distill", str(teacher_dir), "--data", "samples", "--out", str(junk)]) == 2
    assert "is not empty and is not a guidekit run" in capsys.readouterr().err
    assert sorted(p.name for p in junk.iterdir()) == ["a.txt"]
    assert _run(["distill", str(teacher_dir), "--w-range", "0,2", "--resume", "--out", str(run)]) == 2
    assert "was distilled with --w-range 0,4, not 0,2" in capsys.readouterr().err


def test_w_guards():
    student, plain = UNet(UNetConfig.preset("tiny", num_classes=10, guidance_embed=True, **MICRO)), random_unet(2)
    x, t, y = torch.zeros(2, 1, 32, 32), torch.tensor([3, 50]), torch.tensor([1, 10])
    with pytest.raises(GuidekitError, match=r"guidance-distilled student.*needs its CFG weight.*w=torch.full"):
        student(x, t, y)
    with pytest.raises(GuidekitError, match=r"takes no guidance weight w \(guidance_embed=False\)"):
        plain(x, t, y, w=torch.ones(2))
    with pytest.raises(GuidekitError, match=r"takes no guidance weight w"):  # the cond dict path
        ModelDenoiser(plain, NoiseSchedule.linear(100), "v", 10)(x, t, {"y": y, "w": torch.ones(2)})
    for bad in (torch.ones(3), torch.ones(2, dtype=torch.long), 2.0):
        with pytest.raises(GuidekitError, match=r"w must be a float tensor of shape \(2,\)"):
            student(x, t, y, w=bad)
    with pytest.raises(GuidekitError, match="finite"):
        student(x, t, y, w=torch.tensor([1.0, float("nan")]))


@torch.no_grad()
def test_w_reaches_the_net_through_controlnet_and_fast():
    from guidekit.fast import Fast
    from guidekit.models.controlnet import ControlledUNet, ControlNet

    student = student_from(random_unet(3))
    with torch.no_grad():
        student.guidance_embed[2].weight.normal_()  # a w-embedding that matters
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([3, 50]), torch.tensor([1, 10])
    w0, w4 = torch.zeros(2), torch.full((2,), 4.0)
    out = student(x, t, y, w=w4)
    assert not torch.allclose(out, student(x, t, y, w=w0))
    controlled = ControlledUNet(student, ControlNet.from_unet(student))
    assert torch.allclose(controlled(x, t, y, hint=torch.zeros(2, 1, 32, 32), w=w4), out, atol=1e-6)
    assert torch.equal(Fast().wrap(student, "cpu")(x, t, y=y, w=w4), out)
    with pytest.raises(GuidekitError, match="takes no guidance weight w"):
        ControlledUNet(random_unet(2), ControlNet.from_unet(random_unet(2)))(x, t, y, w=w4)


def test_config_roundtrip_with_and_without_guidance_embed():
    for flag in (False, True):
        cfg = UNetConfig.preset("tiny", num_classes=10, guidance_embed=flag)
        d = cfg.to_dict()
        assert ("guidance_embed" in d) == flag  # at its default the field is left out: old fingerprints hold
        assert UNetConfig.from_dict(json.loads(json.dumps(d))) == cfg
    old = UNetConfig.preset("tiny", num_classes=10).to_dict()
    assert UNetConfig.from_dict(old).guidance_embed is False
    with pytest.raises(GuidekitError, match="guidance_embed must be true or false"):
        UNetConfig.from_dict({**old, "guidance_embed": "yes"})
    with pytest.raises(GuidekitError, match="needs a conditional UNet"):
        UNetConfig.preset("tiny", guidance_embed=True)
    assert UNet(UNetConfig.preset("tiny", num_classes=10)).guidance_embed is None


def test_the_pipelines_run_a_student_in_one_pass_per_step(run, teacher_dir, tmp_path):
    """sample_guided hands a student w (cond["w"]) and runs no second half: NFE = steps; a fresh student (zero
    w-embedding) gives the teacher's w = 0 images at any w; its trained w changes them."""
    from guidekit.pipelines import Guidance, SamplerSettings, sample_guided

    teacher = load_model(teacher_dir)
    student = load_model(run / "model")
    fresh = student_from(teacher.net)
    fresh_folder = save_model(tmp_path / "fresh", fresh, distilled={"teacher": str(teacher_dir), "w_range": [0, 4]})
    labels, settings, stats = torch.tensor([1, 7, NULL]), SamplerSettings("ddim", 4, spacing="trailing"), {}
    plain = sample_guided(teacher, labels, [0, 1, 2], Guidance(w=0.0), settings)
    same = sample_guided(load_model(fresh_folder), labels, [0, 1, 2], Guidance(w=3.0), settings, stats=stats)
    assert torch.allclose(same, plain, atol=1e-5) and stats["nfe"] == 4
    a, b = (sample_guided(student, labels, [0, 1, 2], Guidance(w=w), settings) for w in (0.0, 3.0))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(GuidekitError, match=r"trained for w in \[0, 4\]"):
        sample_guided(student, labels, [0], Guidance(w=5.0), settings)
    with pytest.raises(GuidekitError, match="CFG is built into its one pass"):
        sample_guided(student, labels, [0], Guidance(w=1.0, rule="apg"), settings)
