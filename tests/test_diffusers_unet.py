"""Pretrained diffusers UNet2DModels: the wrapper equals diffusers' forward, folders load, CLI, CFG and ControlNet."""

import json

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from guidekit import GuidekitError  # noqa: E402
from guidekit.checkpoints import fingerprint, load_controlnet, load_model, save_controlnet  # noqa: E402
from guidekit.checkpoints.diffusers_folder import schedule_from_scheduler  # noqa: E402
from guidekit.cli import main  # noqa: E402
from guidekit.data import load_dataset  # noqa: E402
from guidekit.diffusion import NULL, NoiseSchedule  # noqa: E402
from guidekit.guidance import ClassifierFreeGuidance  # noqa: E402
from guidekit.models import ControlledUNet, ControlNet  # noqa: E402
from guidekit.models.diffusers_unet import DiffusersUNet  # noqa: E402
from guidekit.training.controlnet_trainer import ControlNetTrainConfig, ControlNetTrainer, make_pairs  # noqa: E402

ATTN = dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
PLAIN = dict(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


def make_unet(seed=0, **kw) -> UNet2DModel:
    """A small random UNet2DModel: 32×32, one channel, two levels."""
    torch.manual_seed(seed)
    args = dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                norm_num_groups=8, attention_head_dim=8, **ATTN)
    return UNet2DModel(**dict(args, **kw)).eval()


def inputs(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, 32, 32, generator=g), torch.tensor([999.0, 412.5, 0.0])[:B]


def save_pipeline(folder, unet, **scheduler):
    """A DDPMPipeline folder: model_index.json, unet/, scheduler/."""
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**scheduler)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kw", [ATTN, PLAIN, dict(num_class_embeds=5), dict(center_input_sample=True),
                                dict(down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"), add_attention=False,
                                     upsample_type="resnet", downsample_type="resnet"),
                                dict(mid_block_type=None, freq_shift=1, flip_sin_to_cos=False)],
                         ids=["attn", "plain", "classes", "center", "resnet-resample", "no-mid"])
def test_forward_equals_diffusers(kw):
    unet = make_unet(**kw)
    net = DiffusersUNet(unet)
    x, t = inputs()
    y = torch.tensor([0, 4, 2]) if "num_class_embeds" in kw else None
    with torch.no_grad():
        want = unet(x, t, class_labels=y).sample
        torch.testing.assert_close(net(x, t, y), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net(x[:1], 250, y if y is None else y[:1]),
                                   unet(x[:1], 250, class_labels=y if y is None else y[:1]).sample)
        emb = net.embed(t, y)
        h, skips = net.encode(x, emb)
    assert [(s.shape[1], s.shape[2]) for s in skips] == net.skip_shapes()
    assert net.middle(h, emb).shape[1] == net.mid_channels == net.config.mid_channels == 64
    c = net.config
    assert (c.image_size, c.in_channels, c.out_channels, c.channels) == (32, 1, 1, 32)
    assert c.num_classes == (5 if "num_class_embeds" in kw else 0)
    assert set(net.state_dict()) == set(unet.state_dict())  # diffusers' own key names


@pytest.mark.parametrize("kw, field", [
    (dict(time_embedding_type="fourier"), "time_embedding_type"),
    (dict(class_embed_type="timestep"), "class_embed_type"),
    (dict(down_block_types=("DownBlock2D", "SkipDownBlock2D"), up_block_types=("SkipUpBlock2D", "UpBlock2D")),
     "down_block_types"),
    (dict(out_channels=2), "out_channels"),
])
def test_unsupported_variants_are_refused(kw, field):
    with pytest.raises(GuidekitError, match=field):
        DiffusersUNet(make_unet(**kw))


@pytest.mark.parametrize("kind, start, end", [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012),
                                              ("linear", 2e-4, 0.03), ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_schedule_from_scheduler_config_equals_diffusers(kind, start, end):
    sch = DDPMScheduler(num_train_timesteps=500, beta_schedule=kind, beta_start=start, beta_end=end,
                        prediction_type="v_prediction")
    schedule, prediction = schedule_from_scheduler(dict(sch.config))
    assert prediction == "v" and schedule.num_timesteps == 500
    torch.testing.assert_close(schedule.betas, sch.betas.double(), rtol=4e-7, atol=0)
    want = sch.alphas_cumprod.double()  # float32 products: relative error ~1e-6; cosine's capped last β more
    torch.testing.assert_close(schedule.alpha_bar_table[:-1], want[:-1], rtol=2e-6, atol=0)
    torch.testing.assert_close(schedule.alpha_bar_table[-1:], want[-1:], rtol=3e-5, atol=0)
    again = NoiseSchedule.from_config(schedule.to_config())
    assert torch.equal(again.betas, schedule.betas)


@pytest.mark.parametrize("config, message", [
    ({"beta_schedule": "sigmoid"}, "sigmoid"), ({"beta_schedule": "linear", "prediction_type": "flow"}, "flow"),
    ({"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01}, "no beta_schedule"),
    ({"beta_schedule": "linear", "trained_betas": [0.1, 0.2]}, "trained_betas"),
])
def test_unsupported_scheduler_configs_are_refused(config, message):
    with pytest.raises(GuidekitError, match=message):
        schedule_from_scheduler(config)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An unconditional UNet in a pipeline folder (cosine, v) and in a UNet-only folder (no scheduler)."""
    root, unet = tmp_path_factory.mktemp("diffusers"), make_unet()
    save_pipeline(root / "pipe", unet, num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                  prediction_type="v_prediction")
    unet.save_pretrained(root / "unet-only")
    return root, unet


def test_load_pipeline_and_unet_folders(folders, tmp_path):
    root, unet = folders
    x, t = inputs()
    with torch.no_grad():
        want = unet(x, t).sample
    for path in (root / "pipe", root / "pipe" / "unet"):  # a pipeline, or its unet/ with ../scheduler
        model = load_model(path)
        assert isinstance(model.net, DiffusersUNet) and not model.net.training and model.path == path
        assert model.schedule.kind == "cosine" and model.net.config.prediction_type == "v"
        assert model.class_names is None and model.denoiser().prediction_type == "v"
        with torch.no_grad():
            torch.testing.assert_close(model.net(x, t), want, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="no scheduler config"):
        model = load_model(root / "unet-only")
    assert model.schedule.kind == "linear" and model.net.config.prediction_type == "eps"
    folder = tmp_path / "with-scheduler"  # UNet-only layout with scheduler_config.json beside it
    unet.save_pretrained(folder)
    DDPMScheduler(beta_schedule="scaled_linear", prediction_type="sample").save_pretrained(folder)
    model = load_model(folder)
    assert model.schedule.kind == "scaled_linear" and model.net.config.prediction_type == "x0"
    assert fingerprint(model.net) == fingerprint(load_model(folder).net)


def test_pickled_and_foreign_folders_are_refused(folders, tmp_path):
    root, unet = folders
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").exists()
    with pytest.raises(GuidekitError, match="only pickled weights.*safe_serialization=True"):
        load_model(tmp_path / "bin")
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    with pytest.raises(GuidekitError, match="pickled"):
        load_model(tmp_path / "unet.pt")
    (tmp_path / "cond").mkdir()
    config = json.loads((root / "unet-only" / "config.json").read_text())
    (tmp_path / "cond" / "config.json").write_text(json.dumps(dict(config, _class_name="UNet2DConditionModel")))
    with pytest.raises(GuidekitError, match="UNet2DConditionModel, not a UNet2DModel"):
        load_model(tmp_path / "cond")
    with pytest.raises(GuidekitError, match="for diffusers models only"):
        load_model(tmp_path / "missing", null_class_index=0)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A class-conditional UNet2DModel with 4 embedding rows, as a pipeline folder."""
    unet = make_unet(seed=2, num_class_embeds=4)
    return save_pipeline(tmp_path_factory.mktemp("cond") / "pipe", unet, num_train_timesteps=100), unet


def test_null_class_index_maps_labels(conditional, tmp_path):
    folder, unet = conditional
    x, t = inputs()
    t = torch.tensor([99.0, 41.5, 0.0])  # this model has T = 100
    plain = load_model(folder)
    assert plain.net.config.num_classes == 4 and plain.class_names == ["0", "1", "2", "3"]
    with pytest.raises(GuidekitError, match="no null class"):
        ClassifierFreeGuidance(plain.denoiser(), 1.0)(x, t, {"y": torch.tensor([0, 1, 2])})
    for null, rows in ((3, [0, 2, 3]), (0, [1, 3, 0])):  # guidekit labels 0, 2 and ∅ (= 3) → embedding rows
        model = load_model(folder, null_class_index=null)
        assert model.net.config.num_classes == 3 and model.class_names == ["0", "1", "2"]
        with torch.no_grad():
            want = unet(x, t, class_labels=torch.tensor(rows)).sample
            torch.testing.assert_close(model.net(x, t, torch.tensor([0, 2, 3])), want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(model.net(x, t, None), unet(x, t, class_labels=torch.full((3,), null)).sample,
                                       rtol=1e-5, atol=1e-6)
        eps = ClassifierFreeGuidance(model.denoiser(), 2.0)(x, t, {"y": torch.tensor([0, 1, NULL])})
        assert torch.isfinite(eps).all()
    (folder / "guidekit.json").write_text(json.dumps({"null_class_index": 3, "class_names": ["a", "b", "c"]}))
    try:
        model = load_model(folder)
        assert model.net.config.null_class_index == 3 and model.class_names == ["a", "b", "c"]
        with pytest.raises(GuidekitError, match=r"null_class_index must be an integer in \[0, 3\]"):
            load_model(folder, null_class_index=4)
    finally:
        (folder / "guidekit.json").unlink()


def test_cli_sample_end_to_end(folders, conditional, tmp_path, capsys):
    root, _ = folders
    out = tmp_path / "plain"
    assert main(["sample", str(root / "pipe"), "--n", "2", "--steps", "2", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 2
    folder, _ = conditional
    code = main(["sample", str(folder), "--n", "2", "--steps", "2", "--out", str(tmp_path / "x"), "--no-progress",
                 "--device", "cpu"])  # default w = 1 needs ∅
    assert code == 2 and "no null class" in capsys.readouterr().err
    out = tmp_path / "cfg"
    assert main(["sample", str(folder), "--null-class-index", "3", "--w", "2", "--class", "0,2", "--n", "2",
                 "--steps", "2", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["w"] == 2 and [i["class"] for i in manifest["images"]] == [0, 0, 2, 2]


def test_controlnet_on_a_diffusers_base(folders, tmp_path):
    root, _ = folders
    base = load_model(root / "pipe").net
    cn = ControlNet.from_unet(base, hint_channels=1, hint_widths=(8,))
    assert cn.config.base_kind == "diffusers" and cn.config.unet["unet2d"]["block_out_channels"] == [32, 64]
    assert not hasattr(cn.copy, "up_blocks") and not hasattr(cn.copy, "conv_out")
    for k, v in cn.copy.state_dict().items():
        assert torch.equal(v, base.state_dict()[k]), k
    x, t = inputs()
    hint = (torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    net = ControlledUNet(base, cn)
    with torch.no_grad():
        assert torch.equal(net(x, t, hint=hint), base(x, t))  # zero convolutions: exactly the base
        down, mid = cn(x, t, None, hint)
    assert [(r.shape[1], r.shape[2]) for r in down] == base.skip_shapes() and mid.shape[1] == base.mid_channels
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = save_controlnet(tmp_path / "cn", cn, base, "threshold")
    loaded = load_controlnet(folder, base)
    assert loaded.net.config == cn.config and isinstance(loaded.net.copy, DiffusersUNet)
    for k, v in cn.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(ControlledUNet(base, loaded.net)(x, t, hint=hint), net(x, t, hint=hint))
    other = DiffusersUNet(make_unet(seed=7), 1000, "v")
    with pytest.raises(GuidekitError, match="another base model"):
        load_controlnet(folder, other)
    with pytest.raises(GuidekitError, match="diffusers base model, not a guidekit one"):
        from guidekit.models import UNet, UNetConfig
        load_controlnet(folder, UNet(UNetConfig.preset("tiny")))


def threshold(x0, generator=None):
    """Stand-in condition: bright pixels of x0 as a 0/1 hint."""
    return (x0 > 0).float()


def test_controlnet_trainer_keeps_the_diffusers_base_frozen(folders, tmp_path):
    root, _ = folders
    model = load_model(root / "pipe")
    base = model.net
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pairs = make_pairs(load_dataset("samples").subset(torch.arange(8)), threshold, 8, seed=0)
    cfg = ControlNetTrainConfig(steps=2, batch_size=4, lr=2e-3, warmup=0, save_every=2, log_every=1, keep=2,
                                ema_decay=0.9)
    run = ControlNetTrainer(base, model.schedule, *pairs, "threshold", cfg, tmp_path / "run")
    out = run.fit(progress=False)
    for k, v in run.raw.base.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(p.abs().sum() > 0 for p in run.trained.mid_zero_conv.parameters())
    loaded = load_controlnet(tmp_path / "run", base)
    assert loaded.path == out and loaded.net.config.base_kind == "diffusers"
    no_null = DiffusersUNet(make_unet(seed=3, num_class_embeds=10), 1000)
    with pytest.raises(GuidekitError, match="p_uncond=0.1 .* has none"):
        ControlNetTrainer(no_null, model.schedule, *pairs, "threshold", cfg, tmp_path / "run2")


def test_missing_diffusers_is_a_clear_error(folders, monkeypatch):
    root, _ = folders
    monkeypatch.setitem(__import__("sys").modules, "diffusers", None)  # `import diffusers` now fails
    with pytest.raises(GuidekitError, match=r"pip install 'guidekit\[diffusers\]'"):
        load_model(root / "pipe")


def test_sdedit_and_repaint_run_unchanged_on_a_diffusers_pipeline(folders, tmp_path):
    """The issue's promise: a user's own diffusers model, unchanged, edits strokes and inpaints from the CLI."""
    import numpy as np
    from PIL import Image

    def pixels(path):
        return torch.from_numpy(np.array(Image.open(path).convert("L"))).float()

    root, _ = folders
    guide = tmp_path / "guide.png"
    Image.new("L", (32, 32), 0).save(guide)
    common = ["--n", "2", "--steps", "3", "--no-progress", "--device", "cpu"]
    out = tmp_path / "edit"
    assert main(["edit", str(root / "pipe"), "--guide", str(guide), "--t0", "0.5", "--mask", "half",
                 "--out", str(out)] + common) == 0
    assert (out / "grid.png").exists()
    out = tmp_path / "inpaint"
    assert main(["inpaint", str(root / "pipe"), "--image", str(guide), "--mask", "half", "--jump-length", "1",
                 "--jump-n-sample", "2", "--out", str(out)] + common) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    known, mask = pixels(out / "image.png"), pixels(out / "mask.png") > 127
    got = pixels(sorted(out.glob("*seed*.png"))[0])
    assert torch.equal(got[mask], known[mask]) and manifest["nfe"] == 3 + (2 - 1) * (3 - 1)
