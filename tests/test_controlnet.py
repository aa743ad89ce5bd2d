"""ControlNet (Zhang et al. 2023): zero init is the base, gating, CFG, training keeps the base frozen, files, CLI."""

import json

import pytest
import torch

from guidekit import GuidekitError
from guidekit.checkpoints import load_controlnet, model_files, save_controlnet, write_folder
from guidekit.cli import main
from guidekit.data import load_dataset
from guidekit.diffusion import NULL, ModelDenoiser, NoiseSchedule
from guidekit.guidance import ClassifierFreeGuidance
from guidekit.models import ControlledUNet, ControlNet, ControlNetConfig, UNet, UNetConfig
from guidekit.sampling import generate
from guidekit.training.controlnet_trainer import ControlNetTrainConfig, ControlNetTrainer, make_pairs

T = 100
MICRO = dict(channels=8, norm_groups=4, num_train_timesteps=T)


def threshold(x0, generator=None):
    """Stand-in condition: bright pixels of x0 in [-1, 1] as a 0/1 hint."""
    return (x0 > 0).float()


def make_base(seed=0, num_classes=3, **kw):
    torch.manual_seed(seed)
    base = UNet(UNetConfig.preset("tiny", num_classes=num_classes, **MICRO, **kw)).eval()
    with torch.no_grad():  # a "pretrained" base: no zero-initialized layers left
        for p in base.parameters():
            p.normal_(0, 0.1)
    return base


def perturbed(net: ControlNet, seed=1) -> ControlNet:
    """A ControlNet whose zero convolutions are no longer zero (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def inputs(B=4, classes=3):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, 1, 32, 32, generator=g)
    t = torch.tensor([99.0, 60.0, 20.0, -1.0])[:B]
    y = torch.arange(B) % (classes + 1)  # the last row is the null class
    return x, t, y, (torch.rand(B, 1, 32, 32, generator=g) > 0.5).float()


def test_from_unet_copies_weights_and_residuals_match_skip_shapes():
    base = make_base()
    cn = ControlNet.from_unet(base)
    sd = base.state_dict()
    for k, v in cn.copy.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x, t, y, h = inputs()
    down, mid = cn(x, t, y, h)
    assert [(r.shape[1], r.shape[2]) for r in down] == base.skip_shapes()
    assert mid.shape == (4, base.mid_channels, 16, 16)
    assert all(not r.any() for r in down) and not mid.any()  # zero convolutions
    assert ControlNetConfig.from_dict(json.loads(json.dumps(cn.config.to_dict()))) == cn.config


def test_zero_init_and_missing_hint_are_exactly_the_base():
    base = make_base()
    net = ControlledUNet(base, ControlNet.from_unet(base))
    x, t, y, h = inputs()
    ref = base(x, t, y)
    assert torch.equal(net(x, t, y, hint=h), ref)
    assert torch.equal(net(x, t, y), ref)
    assert not any(p.requires_grad for p in net.base.parameters())


def test_scale_window_and_sum_of_two_controlnets():
    base = make_base()
    a, b = perturbed(ControlNet.from_unet(base), 1), perturbed(ControlNet.from_unet(base), 2)
    x, t, y, h = inputs()
    ref = base(x, t, y)
    assert not torch.allclose(ControlledUNet(base, a)(x, t, y, h), ref)
    assert torch.equal(ControlledUNet(base, a, control_scale=0.0)(x, t, y, h), ref)
    # window [0.5, 1] of the trajectory: t <= T-1 - 0.5 T = 49; rows t=99, 60 get no control
    out = ControlledUNet(base, a, control_start=0.5)(x, t, y, h)
    assert torch.equal(out[:2], ref[:2]) and not torch.allclose(out[2:], ref[2:])
    full = ControlledUNet(base, a)(x, t, y, h)
    assert torch.allclose(out[2:], full[2:], atol=1e-6)
    # two ControlNets: residuals summed, each times its scale; a list or channel-concatenated tensor
    h2 = torch.rand_like(h)
    da, ma = a(x, t, y, h)
    db, mb = b(x, t, y, h2)
    want = base(x, t, y, [0.5 * p + 2.0 * q for p, q in zip(da, db)], 0.5 * ma + 2.0 * mb)
    two = ControlledUNet(base, [a, b], control_scale=[0.5, 2.0])
    assert torch.allclose(two(x, t, y, [h, h2]), want, atol=1e-6)
    assert torch.equal(two(x, t, y, torch.cat([h, h2], 1)), two(x, t, y, [h, h2]))
    assert torch.equal(two(x, t, y, [None, None]), ref)
    with pytest.raises(GuidekitError, match="concatenated"):
        two(x, t, y, h)
    with pytest.raises(GuidekitError, match="control_start <= control_end"):
        ControlledUNet(base, a, control_start=0.8, control_end=0.2)


def test_hint_uncond_false_gives_null_rows_no_control():
    base = make_base()
    net = ControlledUNet(base, perturbed(ControlNet.from_unet(base)), hint_uncond=False)
    x, t, y, h = inputs()  # y = [0, 1, 2, 3]: row 3 is the null class
    out, ref = net(x, t, y, h), base(x, t, y)
    assert torch.equal(out[3], ref[3]) and not torch.allclose(out[:3], ref[:3])
    assert torch.equal(net(x, t, None, h), base(x, t, None))  # y None = null on a class-conditional base


def test_sampling_with_ddim_and_cfg_end_to_end():
    base, schedule = make_base(), NoiseSchedule.linear(T)
    h = inputs()[3][:2]
    cond = {"y": torch.tensor([0, NULL]), "hint": h}
    kw = dict(schedule=schedule, shape=(1, 32, 32), seeds=[0, 1], steps=4)
    plain = ModelDenoiser(base, schedule, "eps", 3)
    zero = ModelDenoiser(ControlledUNet(base, ControlNet.from_unet(base)), schedule, "eps", 3)
    cn = perturbed(ControlNet.from_unet(base))
    for wrap in (lambda d: d, lambda d: ClassifierFreeGuidance(d, 2.0)):
        ref = generate(wrap(plain), cond={"y": cond["y"]}, **kw)
        assert torch.equal(generate(wrap(zero), cond=cond, **kw), ref)
        out = generate(wrap(ModelDenoiser(ControlledUNet(base, cn), schedule, "eps", 3)), cond=cond, **kw)
        assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all() and not torch.allclose(out, ref)
    # CFG with hint_uncond=False: the null half runs without control
    cfg = ClassifierFreeGuidance(ModelDenoiser(ControlledUNet(base, cn, hint_uncond=False), schedule, "eps", 3), 2.0)
    assert torch.isfinite(generate(cfg, cond=cond, **kw)).all()


def test_a_text_base_and_every_copy_see_the_prompt():
    base = make_base(num_classes=0, text_dim=8)
    x, t, _, h = inputs()
    e = torch.randn(4, 8, generator=torch.Generator().manual_seed(4))
    zero = ControlledUNet(base, ControlNet.from_unet(base))
    assert torch.equal(zero(x, t, hint=h, text=e), base(x, t, text=e))  # zero convolutions: the base, prompt and all
    assert torch.equal(zero(x, t, text=e), base(x, t, text=e)) and torch.equal(zero(x, t, hint=h), base(x, t))
    cn = perturbed(ControlNet.from_unet(base))
    down, mid = cn(x, t, None, h, e)
    assert not torch.allclose(mid, cn(x, t, None, h)[1])  # the copy's embedding takes the prompt
    assert torch.equal(cn(x, t, None, h, torch.zeros(4, 8))[1], cn(x, t, None, h)[1])  # None = ∅ = zeros
    want = base(x, t, None, down, mid, text=e)
    assert torch.allclose(ControlledUNet(base, cn)(x, t, hint=h, text=e), want, atol=1e-6)
    windowed = ControlledUNet(base, cn, control_start=0.5)(x, t, hint=h, text=e)  # rows 2, 3 only, their prompts
    assert torch.equal(windowed[:2], base(x, t, text=e)[:2]) and torch.allclose(windowed[2:], want[2:], atol=1e-6)
    with pytest.raises(GuidekitError, match=r"text must be a float tensor of shape \(4, 8\)"):
        ControlledUNet(base, cn)(x, t, hint=h, text=e[:2])
    label_base = make_base()
    with pytest.raises(GuidekitError, match="takes no text prompt"):
        ControlledUNet(label_base, ControlNet.from_unet(label_base))(x, t, hint=h, text=e)


def test_cfg_with_a_prompt_a_negative_prompt_and_a_hint_in_one_call():
    base, schedule = make_base(num_classes=0, text_dim=8), NoiseSchedule.linear(T)
    net = ControlledUNet(base, perturbed(ControlNet.from_unet(base)))
    x, t, _, h = inputs(2)
    g = torch.Generator().manual_seed(5)
    e, neg = torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g)
    cond = {"y": torch.full((2,), NULL), "text": e, "text_negative": neg, "hint": h}
    got = ClassifierFreeGuidance(ModelDenoiser(net, schedule, "eps", 0), 2.0)(x, t, cond)
    assert torch.allclose(got, 3 * net(x, t, hint=h, text=e) - 2 * net(x, t, hint=h, text=neg), atol=1e-5)
    kw = dict(schedule=schedule, shape=(1, 32, 32), seeds=[0, 1], steps=3)
    cfg = ClassifierFreeGuidance(ModelDenoiser(net, schedule, "eps", 0), 2.0)
    both = generate(cfg, cond=cond, **kw)
    assert torch.isfinite(both).all() and not torch.allclose(both, generate(cfg, cond={**cond, "text": neg}, **kw))


@pytest.fixture(scope="module")
def pairs():
    ds = load_dataset("samples").subset(torch.arange(24))
    return make_pairs(ds, threshold, 16, seed=0)


def trainer(base, pairs, out, steps, resume=False, text=None, **kw):
    cfg = ControlNetTrainConfig(**dict(dict(steps=steps, batch_size=4, lr=2e-3, warmup=0, save_every=3, log_every=2,
                                            keep=5, ema_decay=0.9), **kw))
    return ControlNetTrainer(base, NoiseSchedule.linear(T), *pairs, "threshold", cfg, out, resume=resume, text=text)


def test_training_changes_controlnet_not_base(pairs, tmp_path):
    base = make_base(num_classes=10)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    run = trainer(base, pairs, tmp_path, 4, p_drop_hint=0.5)
    out = run.fit(progress=False)
    for k, v in run.raw.base.state_dict().items():
        assert torch.equal(v, before[k]), k
    x, t, y, h = inputs(classes=10)
    down, mid = run.trained(x, t, y, h)
    assert mid.abs().sum() > 0 and all(r.abs().sum() > 0 for r in down)
    assert (out / "config.json").exists() and (tmp_path / "log.csv").read_text().startswith("step,loss")
    with torch.no_grad():
        run.raw.base.conv_in.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="base model's weights changed"):
        run.save()


def test_training_on_a_text_base_feeds_captions_to_base_and_copy(pairs, tmp_path):
    from guidekit.text.table import CaptionTable

    base = make_base(num_classes=0, text_dim=8)
    g = torch.Generator().manual_seed(6)
    table = CaptionTable(torch.randint(3, (16, 2), generator=g), torch.randn(3, 8, generator=g), ["a", "b", "c"],
                         {"encoder": "test"})
    run = trainer(base, pairs, tmp_path / "t", 3, p_uncond=0.5, text=table)
    with_text = run.loss_on(0)
    assert not torch.equal(with_text, trainer(base, pairs, tmp_path / "n", 3, p_uncond=0.5).loss_on(0))
    out = run.fit(progress=False)
    copy, frozen = run.trained.copy.text_embed.weight, base.text_embed.weight
    assert not torch.allclose(copy, frozen)  # the copy learned from the prompts; the base did not move
    assert torch.equal(run.raw.base.text_embed.weight, frozen)
    assert json.loads((out / "config.json").read_text())["text"] == {"encoder": "test"}
    with pytest.raises(GuidekitError, match="need a text-conditioned base"):
        trainer(make_base(num_classes=10), pairs, tmp_path / "x", 3, text=table)
    with pytest.raises(GuidekitError, match="does not match the 16 pairs"):
        trainer(base, pairs, tmp_path / "y", 3, text=CaptionTable(table.ids[:4], table.embeddings, [], {}))


def test_resume_equals_uninterrupted_run(pairs, tmp_path):
    base = make_base(num_classes=10)
    straight = trainer(base, pairs, tmp_path / "a", 6)
    straight.fit(progress=False)
    trainer(base, pairs, tmp_path / "b", 3).fit(progress=False)
    resumed = trainer(base, pairs, tmp_path / "b", 6, resume=True)
    assert resumed.step == 3
    resumed.fit(progress=False)
    for a, b in ((straight.trained.state_dict(), resumed.trained.state_dict()),
                 (straight.ema.state_dict(), resumed.ema.state_dict())):
        for k, v in a.items():
            assert torch.equal(v, b[k]), k
    with pytest.raises(GuidekitError, match="another base model"):
        trainer(make_base(seed=5, num_classes=10), pairs, tmp_path / "b", 7, resume=True)


def test_save_load_roundtrip_and_refusals(tmp_path):
    base = make_base()
    cn = perturbed(ControlNet.from_unet(base, hint_channels=2, hint_widths=(4,)))
    folder = save_controlnet(tmp_path / "cn", cn, base, "canny")
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "guidekit-controlnet/1" and config["condition"] == "canny"
    assert config["base"].startswith("sha256:")
    loaded = load_controlnet(folder, base)
    assert loaded.condition == "canny" and loaded.net.config == cn.config and not loaded.net.training
    for k, v in cn.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[k], v), k
    with pytest.raises(GuidekitError, match="another base model"):
        load_controlnet(folder, make_base(seed=1))  # same config, other weights
    with pytest.raises(GuidekitError, match="trained for a base model with config"):
        load_controlnet(folder, make_base(num_classes=2))
    pickled = tmp_path / "cn.pt"
    torch.save(cn.state_dict(), pickled)
    with pytest.raises(GuidekitError, match="pickled"):
        load_controlnet(pickled, base)
    write_folder(folder, {"config.json": config, "model.safetensors": {"hint_encoder.0.weight": torch.zeros(1)}})
    with pytest.raises(GuidekitError, match=r"hint_encoder.0.weight: file \(1,\) vs model"):
        load_controlnet(folder, base)
    write_folder(tmp_path / "unet", model_files(base, NoiseSchedule.linear(T), None, base.state_dict()))
    with pytest.raises(GuidekitError, match="not a guidekit ControlNet"):
        load_controlnet(tmp_path / "unet", base)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    ds = load_dataset("samples")
    base = make_base(num_classes=ds.num_classes)
    folder = tmp_path_factory.mktemp("base") / "model"
    return write_folder(folder, model_files(base, NoiseSchedule.linear(T), ds.class_names, base.state_dict()))


def test_cli_train_controlnet(base_dir, tmp_path):
    pytest.importorskip("guidekit.conditions")
    out = tmp_path / "run"
    args = ["train-controlnet", str(base_dir), "--condition", "canny", "--pairs", "16", "--dataset", "samples",
            "--steps", "3", "--batch-size", "4", "--save-every", "2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    assert json.loads((out / "controlnet" / "config.json").read_text())["condition"] == "canny"
    from guidekit.checkpoints import load_model
    loaded = load_controlnet(out, load_model(base_dir).net)
    assert loaded.condition == "canny" and loaded.path == out / "controlnet"
    assert main(["train-controlnet", str(base_dir), "--dataset", "samples", "--out", str(out), "--resume",
                 "--steps", "4", "--no-progress"]) == 0
    assert (out / "checkpoints" / "step-00000004").exists()


@pytest.mark.parametrize("args, message", [
    (["--condition", "canny"], "model not found"),
    (["--condition", "spaceship"], "unknown"),
    (["--condition", "canny", "--pairs", "100000"], "--pairs 100000 must be between"),
])
def test_cli_bad_input_exits_2(base_dir, tmp_path, capsys, args, message):
    pytest.importorskip("guidekit.conditions")
    base = str(tmp_path / "nowhere") if message == "model not found" else str(base_dir)
    out = tmp_path / "out"
    code = main(["train-controlnet", base, "--dataset", "samples", "--out", str(out), "--no-progress"] + args)
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_controlnet_files_without_base_kind_still_load(tmp_path):
    base = make_base()
    cn = perturbed(ControlNet.from_unet(base))
    assert cn.config.base_kind == "guidekit"
    folder = save_controlnet(tmp_path / "cn", cn, base, "canny")
    config = json.loads((folder / "config.json").read_text())
    del config["controlnet"]["base_kind"]  # as written before diffusers bases existed
    (folder / "config.json").write_text(json.dumps(config))
    assert load_controlnet(folder, base).net.config == cn.config
