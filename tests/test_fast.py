"""guidekit.fast: every speed option matches fp32 eager to its precision's tolerance; bad options get clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.checkpoints import LoadedModel
from guidekit.cli import main
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError
from guidekit.fast import Fast
from guidekit.models.controlnet import ControlledUNet, ControlNet
from guidekit.models.unet import UNet, UNetConfig

cuda = pytest.mark.gpu  # skipped without a CUDA GPU (conftest.py)


def tiny_net(seed=0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(UNetConfig.preset("tiny", num_classes=3)).eval()
    for p in net.parameters():  # zero-initialized output heads would make every comparison trivially 0 == 0
        torch.nn.init.normal_(p, std=0.05)
    return net


def inputs(n=4, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 32, 32, generator=g).to(device)
    t = torch.randint(1000, (n,), generator=g).to(device)
    y = torch.tensor([0, 1, 2, 3][:n]).to(device)
    return x, t, y


def test_fp32_wrap_is_the_network_bit_for_bit():
    net = tiny_net()
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(Fast().wrap(net, "cpu")(x, t, y=y), net(x, t, y=y))


def test_bf16_autocast_matches_fp32_to_bf16_tolerance():
    net = tiny_net()
    x, t, y = inputs()
    with torch.no_grad():
        ref = net(x, t, y=y)
        out = Fast(precision="bf16").wrap(net, "cpu")(x, t, y=y)
    assert out.dtype == torch.bfloat16  # the denoiser casts it back to x's dtype
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05, err  # it really ran in bf16, and only bf16 rounding separates them


def test_channels_last_matches_fp32():
    net = tiny_net()
    x, t, y = inputs()
    with torch.no_grad():
        ref = net(x, t, y=y)
        out = Fast(channels_last=True).wrap(net, "cpu")(x, t, y=y)
    assert next(p for p in net.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_auto_is_fp32_eager_on_the_cpu():
    assert Fast.auto("cpu") == Fast()
    assert Fast.auto("cpu", "bf16").precision == "bf16"


@pytest.mark.parametrize("kwargs, needle", [
    (dict(cuda_graphs=True), "--cuda-graphs needs a CUDA device"),
    (dict(precision="fp16"), "fp16 needs a CUDA device"),
    (dict(precision="fp8"), "precision 'fp8'"),
])
def test_options_the_cpu_cannot_run_are_refused(kwargs, needle):
    with pytest.raises(GuidekitError, match=needle):
        Fast(**kwargs).validate("cpu")


def test_loaded_model_denoiser_runs_through_fast_and_reuses_the_wrapper():
    net = tiny_net()
    model = LoadedModel(net, NoiseSchedule.linear(1000), None, None, fast=Fast(precision="bf16"))
    x, t, y = inputs()
    d1, d2 = model.denoiser(), model.denoiser()
    assert d1.net is d2.net and d1.net.fast.precision == "bf16"
    with torch.no_grad():
        ref = LoadedModel(net, model.schedule, None, None).denoiser()(x, t, {"y": y})
        out = d1(x, t, {"y": y})
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_graph_safety_flags():
    net = tiny_net()
    cn = ControlNet.from_unet(net, 1, (8, 16))
    assert net.graph_safe
    assert ControlledUNet(net, [cn]).graph_safe
    assert not ControlledUNet(net, [cn], control_start=0.2).graph_safe  # a window is a data-dependent branch
    assert not ControlledUNet(net, [cn], hint_uncond=False).graph_safe


def test_cli_bf16_on_cpu_samples_close_to_fp32(tmp_path):
    args = ["sample", "fmnist-cfg", "--n", "2", "--steps", "3", "--class", "Trouser", "--w", "1", "--seed", "0",
            "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--precision", "bf16"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["fast"]["precision"] == "bf16"
    for name in ("0000_class1_seed0.png", "0001_class1_seed1.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name), dtype=np.float32) for d in "ab")
        assert np.abs(a - b).mean() < 4, name  # mean pixel difference (of 255) from bf16 rounding alone


def test_cli_refuses_cuda_graphs_on_the_cpu(tmp_path, capsys):
    code = main(["sample", "fmnist-cfg", "--n", "1", "--steps", "2", "--device", "cpu", "--cuda-graphs",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and "--cuda-graphs needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@cuda
def test_a_seed_samples_the_same_image_on_gpu_and_cpu():
    """Noise is drawn on the CPU: the same seeds give the same noise on CUDA, and fp64 samples agree to rounding."""
    from guidekit.sampling import Noise, generate

    assert torch.equal(Noise([3, 8], "cuda").randn((1, 4, 4)).cpu(), Noise([3, 8]).randn((1, 4, 4)))
    schedule = NoiseSchedule.linear()

    def eps(x, t, cond):  # exact ε of x0 ~ N(0.3, 0.5²) per pixel, on x's device
        ab = schedule.alpha_bar(t).to(x.device, x.dtype).view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * 0.3) / (ab * 0.25 + 1 - ab)

    for sampler in ("ddpm", "dpmpp-2m-sde"):
        on = {d: generate(eps, schedule, (1, 4, 4), [3, 8], {}, sampler=sampler, steps=10, device=d).cpu()
              for d in ("cpu", "cuda")}
        torch.testing.assert_close(on["cuda"], on["cpu"], rtol=1e-5, atol=1e-5)


@cuda
def test_cuda_graphs_replay_matches_eager_on_gpu():
    net = tiny_net().cuda()
    fast = Fast(precision="bf16", channels_last=True, cuda_graphs=True)
    f = fast.wrap(net, "cuda")
    eager = Fast(precision="bf16", channels_last=True).wrap(net, "cuda")
    for seed in range(3):  # replays on fresh inputs, not the captured ones
        x, t, y = inputs(4, "cuda")
        x = x + seed
        with torch.no_grad():
            torch.testing.assert_close(f(x, t, y=y).float(), eager(x, t, y=y).float(), atol=2e-2, rtol=2e-2)
    assert len(f.graphs) == 1


@cuda
def test_compile_matches_eager_on_gpu():
    net = tiny_net().cuda()
    x, t, y = inputs(4, "cuda")
    with torch.no_grad():
        ref = net(x, t, y=y)
        out = Fast(compile=True).wrap(net, "cuda")(x, t, y=y)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


def test_train_compile_reaches_the_same_weights_as_eager_on_cpu(tmp_path):
    """--compile changes only how the forward runs: two steps of a tiny run give the eager run's weights."""
    from safetensors.torch import load_file

    base = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "4",
            "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "eager")]) == 0
    # the mode reaches torch.compile (reduce-overhead's CUDA graphs are skipped on the CPU: the same kernels)
    assert main(base + ["--out", str(tmp_path / "compiled"), "--compile-mode", "reduce-overhead"]) == 0
    a = load_file(tmp_path / "eager" / "model" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("flags, mode", [([], None), (["--compile"], "default"),
                                         (["--compile-mode", "reduce-overhead"], "reduce-overhead"),
                                         (["--compile", "--compile-mode", "max-autotune"], "max-autotune")])
@pytest.mark.parametrize("command", ["train", "train-classifier", "train-controlnet"])
def test_training_commands_take_a_compile_mode(command, flags, mode):
    from guidekit.cli import build_parser
    from guidekit.cli.common import train_compile_mode
    base = {"train": ["train"], "train-classifier": ["train-classifier"],
            "train-controlnet": ["train-controlnet", "BASE", "--condition", "edges"]}[command]
    args = build_parser().parse_args(base + ["--out", "o"] + flags)
    assert train_compile_mode(args) == mode


def test_a_trainer_refuses_an_unknown_compile_mode(tmp_path):
    from guidekit.data import load_dataset
    from guidekit.diffusion.schedule import NoiseSchedule
    from guidekit.models.unet import UNetConfig
    from guidekit.training.trainer import TrainConfig, Trainer
    data = load_dataset("samples")
    trainer = Trainer(UNetConfig.preset("tiny", num_classes=data.num_classes), data, NoiseSchedule.linear(1000),
                      TrainConfig(steps=1, batch_size=4), tmp_path / "run")
    with pytest.raises(GuidekitError, match="'fastest' is not one of default, reduce-overhead"):
        trainer.compile("fastest")


@cuda
def test_sync_free_training_with_cuda_graphs_matches_eager_on_gpu(tmp_path):
    """The GPU trainer (no per-step host sync) under --compile-mode reduce-overhead in bf16 moves the weights the way
    the eager fp32 run does: same seeds, six AdamW steps, exported raw weights (--ema-decay 0)."""
    from safetensors.torch import load_file

    from guidekit.data import load_dataset
    from guidekit.models import UNet, UNetConfig
    base = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "6", "--batch-size", "8", "--lr", "1e-3",
            "--warmup", "0", "--ema-decay", "0", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "eager"), "--mixed-precision", "no"]) == 0
    assert main(base + ["--out", str(tmp_path / "graphs"), "--compile-mode", "reduce-overhead"]) == 0
    torch.manual_seed(0)  # the trainer's initialization (seed 0)
    init = UNet(UNetConfig.preset("tiny", num_classes=load_dataset("samples").num_classes)).state_dict()
    a = load_file(tmp_path / "eager" / "model" / "model.safetensors")
    b = load_file(tmp_path / "graphs" / "model" / "model.safetensors")
    da = torch.cat([(a[k].float() - init[k]).flatten() for k in init])
    db = torch.cat([(b[k].float() - init[k]).flatten() for k in init])
    assert torch.isfinite(db).all() and da.norm() > 0
    assert torch.nn.functional.cosine_similarity(da, db, dim=0) > 0.9
    assert abs(db.norm() / da.norm() - 1) < 0.1


def test_cudnn_benchmark_is_set_inside_and_restored_after(monkeypatch):
    from guidekit.fast import cudnn_benchmark
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError), cudnn_benchmark(True):
        raise RuntimeError("a failing call")
    assert not torch.backends.cudnn.benchmark  # restored on errors too


@cuda
def test_fast_forward_autotunes_cudnn_only_during_its_call(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    seen = []
    net = tiny_net().cuda()
    real = net.forward
    monkeypatch.setattr(net, "forward", lambda *a, **k: seen.append(torch.backends.cudnn.benchmark) or real(*a, **k))
    x, t, y = inputs(2, "cuda")
    with torch.no_grad():
        Fast(precision="bf16").wrap(net, "cuda")(x, t, y=y)
        Fast(precision="bf16", cudnn_benchmark=False).wrap(net, "cuda")(x, t, y=y)
    assert seen == [True, False] and not torch.backends.cudnn.benchmark


def test_graphed_train_step_refuses_a_cpu_model():
    from guidekit.training.graphed import GraphedTrainStep
    net = tiny_net()
    with pytest.raises(GuidekitError, match="needs the model on a CUDA device"):
        GraphedTrainStep(lambda x: net(x, torch.zeros(1)).mean(), list(net.parameters()), lr=1e-3)


def _graphed_vs_eager(steps, poison_at=None):
    """Parameters after `steps` AdamW steps: the CUDA-graphed step and the plain fused-AdamW loop, same batches."""
    from guidekit.training.graphed import GraphedTrainStep
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    a, b = tiny_net().cuda().train(), tiny_net().cuda().train()
    x, t, y = inputs(4, "cuda")
    batches = [(x * (1 + 0.1 * i), t, y) for i in range(steps)]
    if poison_at is not None:
        batches[poison_at] = (torch.full_like(x, float("nan")), t, y)
    step = GraphedTrainStep(lambda x_, t_, y_: a(x_, t_, y_).pow(2).mean(), list(a.parameters()), lr=1e-3,
                            weight_decay=0.01)
    opt = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    for i, batch in enumerate(batches):
        loss, norm = step(*batch, lr=1e-3 * (1 + i) / steps)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (1 + i) / steps
        lb = b(*batch).pow(2).mean()
        if torch.isfinite(lb):
            lb.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return a, b, step


@cuda
def test_graphed_train_step_matches_eager_adamw_on_gpu():
    a, b, step = _graphed_vs_eager(7)  # 3 eager warm-up steps, the capture, 3 replays
    assert step.graph is not None
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@cuda
def test_graphed_train_step_skips_a_non_finite_step_on_gpu():
    a, b, step = _graphed_vs_eager(7, poison_at=5)  # a replayed step with NaN inputs leaves the weights alone
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.isfinite(p).all(), name
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
