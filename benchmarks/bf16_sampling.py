"""What bf16 autocast does to samples, measured on the CPU with the same noise: CUDA autocast's bf16 rules emulated.

A CPU without bf16 hardware runs real bf16 autocast ~100× slower than fp32, so this emulates it: convolutions,
linear layers, matmuls and attention get bf16-rounded inputs, accumulate in fp32 (as a GPU's bf16 GEMM does) and
return bf16; GroupNorm/LayerNorm/softmax/exp run in fp32 (autocast's fp32 list); everything else runs in the dtype
its inputs promote to (bf16 + bf16 stays bf16, as in a residual add under autocast). A self-check first compares one
forward with real CPU bf16 autocast. Then one row is sampled fp32 and emulated bf16 from the same seeds (on a GPU,
`--device cuda`, real bf16 autocast as well, and fp32 without TF32), so CPU and GPU tables compare directly.
`--tf32-evaluator FILE` instead scores a sweep's saved samples with the evaluator in fp32 and with its convolution
inputs rounded to TF32 (what cuDNN runs for fp32 on a GPU), reference features included.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from guidekit.checkpoints import load_model
from guidekit.data import load_dataset
from guidekit.diffusion import NULL
from guidekit.pipelines import Guidance, SamplerSettings, sample_guided
from guidekit.pipelines import inpaint_guided, masked_errors
from guidekit.fast import Fast
from guidekit.masks import make_mask
from guidekit.metrics.evaluate import evaluate
from guidekit.metrics.network import load_network, network_id
from guidekit.metrics.reference import reference

LOW = {F.conv2d, F.linear, F.scaled_dot_product_attention, torch.matmul, torch.bmm, torch.baddbmm, torch.mm,
       torch.addmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.bmm}
FP32 = {F.group_norm, F.layer_norm, F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax, torch.exp,
        torch.Tensor.exp}


def _cast(obj, fn):
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(o, fn) for o in obj)
    return obj


class EmulatedBF16(TorchFunctionMode):
    """CUDA autocast's bf16 rules with fp32 arithmetic (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in LOW:
            rounded = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
            args, kwargs = _cast(args, rounded), {k: _cast(v, rounded) for k, v in kwargs.items()}
            return func(*args, **kwargs).to(torch.bfloat16)
        if func in FP32:
            args, kwargs = _cast(args, torch.Tensor.float), {k: _cast(v, torch.Tensor.float) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def tf32(t: torch.Tensor) -> torch.Tensor:
    """t rounded to TF32's 10-bit mantissa (round to nearest)."""
    return ((t.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


class EmulatedTF32(TorchFunctionMode):
    """fp32 convolutions and matmuls on TF32-rounded inputs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in LOW:
            args = _cast(args, lambda t: tf32(t) if t.dtype == torch.float32 else t)
        return func(*args, **(kwargs or {}))


def tf32_evaluator_check(path: str, data) -> None:
    """FID of saved uint8 samples with the evaluator in fp32 and in emulated TF32 (reference features likewise)."""
    from safetensors.torch import load_file

    from guidekit.metrics import scores
    from guidekit.metrics.reference import extract

    images = load_file(path)["images"].float() / 127.5 - 1
    evaluator, real = load_network(), data.images(slice(None))
    for name, mode in (("fp32", None), ("TF32 (emulated)", EmulatedTF32)):
        with mode() if mode else torch.no_grad():
            stats = [scores.gaussian_stats(extract(evaluator, x)[0]) for x in (real, images)]
        print(f"evaluator in {name}: FID-FMNIST {scores.fid_from_stats(*stats[0], *stats[1]):.4f}")


def emulate_bf16(net: torch.nn.Module) -> None:
    """Run net's forward under EmulatedBF16 from now on."""
    forward = net.forward

    def wrapped(*args, **kwargs):
        with EmulatedBF16():
            return forward(*args, **kwargs)
    net.forward = wrapped


def self_check(model, device) -> str:
    """Max |Δε| of emulated and real bf16 autocast against fp32, and between the two, on one small batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32, generator=g).to(device)
    t = torch.tensor([50, 300, 600, 950], device=device)
    y = torch.tensor([0, 3, 7, 10], device=device)
    net = model.net
    with torch.no_grad():
        fp32 = net(x, t, y=y).float()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            real = net(x, t, y=y).float()
        with EmulatedBF16():
            emul = net(x, t, y=y).float()
    d = lambda a, b: (a - b).abs().max().item()  # noqa: E731
    return (f"self-check, max |Δ| of the network output: real bf16 vs fp32 {d(real, fp32):.3g}, emulated vs fp32 "
            f"{d(emul, fp32):.3g}, emulated vs real {d(emul, real):.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="fmnist-cfg")
    p.add_argument("--task", default="repaint", choices=["repaint", "sample"])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--mask", default="half")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--spacing", default="trailing")
    p.add_argument("--jump-length", type=int, default=2)
    p.add_argument("--r", type=int, default=1)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the usual places)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tf32-evaluator", metavar="FILE", help="a sweep's samples/*.safetensors: run the TF32 check only")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    data = load_dataset("fashion-mnist", split="test", data_dir=a.data)
    if a.tf32_evaluator:
        return tf32_evaluator_check(a.tf32_evaluator, data)
    evaluator = load_network(device=a.device)
    ref = reference(evaluator, data, network_id(evaluator))
    truth, truth_labels = data.images(slice(0, a.n)), data.labels[:a.n]
    mask = make_mask(a.mask, truth.shape[-1], a.n, torch.Generator().manual_seed(0))  # the sweep's masks (--seed 0)
    settings = SamplerSettings(a.sampler, a.steps, 0.0, a.spacing, True, a.n)
    seeds = list(range(a.n))
    what = (f"RePaint {a.mask} mask, jump length {a.jump_length}, r = {a.r}" if a.task == "repaint"
            else "class-balanced samples, w = 0")
    print(f"{a.model}, {what}, {a.sampler}-{a.steps} {a.spacing}, n = {a.n}, seeds 0 … {a.n - 1}")
    rows, out = [], {}
    precisions = ["fp32", "bf16 (emulated)"] + (["bf16 autocast"] if a.device.startswith("cuda") else [])
    for precision in precisions:
        model = load_model(a.model, a.device)
        if precision == "bf16 (emulated)":
            print(self_check(model, a.device), flush=True)
            emulate_bf16(model.net)
        if precision == "bf16 autocast":
            model.fast = Fast(precision="bf16")
        start = time.time()
        if a.task == "repaint":
            images, _ = inpaint_guided(model, truth, mask, torch.full((a.n,), NULL), seeds, Guidance(), settings,
                                       a.jump_length, a.r, a.device)
            l2 = f"{float(masked_errors(images, truth, mask)[0].mean()):.4f}"
            requested = truth_labels
        else:
            requested = torch.arange(a.n) % 10
            images, l2 = sample_guided(model, requested, seeds, Guidance(), settings, a.device), "–"
        out[precision] = images
        m = evaluate(images, requested, evaluator, ref)
        rows.append(f"| {precision} | {l2} | {m['fid']:.2f} | {m['kid'] * 1e3:.1f} ± {m['kid_std'] * 1e3:.1f} | "
                    f"{m['accuracy']:.3f} | {time.time() - start:.0f} |")
    diffs = [(k, (out["fp32"] - out[k]).abs() / 2) for k in precisions[1:]]  # [0, 1] units
    print("| network precision | masked L2 | FID-FMNIST | KID ×10³ | accuracy | seconds |\n| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for k, diff in diffs:
        print(f"per pixel |fp32 − {k}| in [0, 1] units: mean {diff.mean():.4f}, 99th percentile "
              f"{diff.flatten().quantile(0.99):.4f}, max {diff.max():.4f}")


if __name__ == "__main__":
    main()
