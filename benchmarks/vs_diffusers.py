"""guidekit vs diffusers in one process, on the same class-conditional UNet: forward, CFG DDIM sampling, training.

The network is the reference diffusers UNet2DModel (32x32x1, block_out_channels 64/128/256, attention at the two
lower resolutions, layers_per_block 2, 10 classes + null = 11 class embeddings, ~16M parameters; --small uses
widths 32/64/128 and 8 GroupNorm groups, like guidekit's small preset, for ~4M). Rows:
  forward   no-grad forward at --batch: UNet2DModel vs guidekit's own UNet of matching size
  sample    CFG DDIM-N: diffusers' plain loop (DDIMScheduler) vs guidekit.generate + ClassifierFreeGuidance on
            (a) the SAME diffusers network through DiffusersUNet and (b) guidekit's own UNet
  train     one AdamW step, MSE on eps: the same plain loop for both models (measures model + optimizer only)
plus a correctness row: max |guidekit-on-diffusers-network − diffusers loop| for the same initial noise (fp32);
it is float rounding only when --steps divides 1000 (else DDIMScheduler.step targets t − 1000 // steps, which is
not its next trailing timestep, while guidekit steps to the next timestep).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="block_out_channels 32/64/128 (~4M params) for CPU runs")
    p.add_argument("--batch", type=int, default=64, help="images per forward / sampling batch / training step")
    p.add_argument("--forward-batch", type=int, default=0, help="images per forward row (0 = --batch)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the sampling row")
    p.add_argument("--w", type=float, default=2.0, help="CFG weight w (diffusers guidance_scale = 1 + w)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = torch.autocast(bfloat16)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before each measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--fast", action="store_true", help="add rows for guidekit's fast path on its own UNet "
                   "(guidekit.fast: torch.compile; channels_last and CUDA graphs on a GPU) vs diffusers eager")
    p.add_argument("--train-steps", type=int, default=5, help="optimizer steps per timed training call")
    p.add_argument("--rows", default="all", choices=["all", "train", "forward"],
                   help="train: only the training rows (diffusers eager vs guidekit's variants); forward: only the "
                   "forward rows, with achieved TFLOP/s against the matmul peak")
    p.add_argument("--train-variants", default="compile,compile-nchw,reduce-overhead,graphed,graphed-compile",
                   help="comma-separated training rows of --fast: compile, compile-nchw, reduce-overhead, "
                   "reduce-overhead-layout-opt (Inductor's channels_last layout pass forced on), "
                   "max-autotune (no CUDA graphs; tunes for minutes), graphed, graphed-compile, diffusers-autotuned "
                   "(diffusers' eager step with cuDNN autotuning, as guidekit's rows have; CUDA-only rows are "
                   "skipped on the CPU)")
    p.add_argument("--profile", action="store_true", help="print (and save) kernel profiles of the compiled "
                   "training step (CUDA), with the callers and input shapes of its copy kernels")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


class Bench:
    """Timing (median of repeats after warm-up, synchronized) and peak memory, under the run's autocast."""

    def __init__(self, device: torch.device, dtype: str, repeats: int, warmup: int):
        self.device, self.repeats, self.warmup = device, repeats, warmup
        self.cuda = device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if dtype == "bf16" else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> tuple[float, float]:
        """(median seconds per call, peak memory in MiB: CUDA max allocated, or growth of the process's peak RSS)."""
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with self.autocast():
            for _ in range(self.warmup):
                fn()
            times = []
            for _ in range(self.repeats):
                self.sync()
                start = time.perf_counter()
                self.last = fn()
                self.sync()
                times.append(time.perf_counter() - start)
        if self.cuda:
            mem = torch.cuda.max_memory_allocated() / 2 ** 20
        else:  # ru_maxrss is KiB on Linux
            mem = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        return statistics.median(times), mem


def build_models(small: bool, device: torch.device):
    """The reference diffusers UNet2DModel and guidekit's UNet preset of the same shape."""
    from diffusers import UNet2DModel

    from guidekit.models import UNet, UNetConfig

    chans = (32, 64, 128) if small else (64, 128, 256)
    ref = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=chans, layers_per_block=2,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                      norm_num_groups=8 if small else 32, num_class_embeds=11)
    own = UNet(UNetConfig.preset("small" if small else "base", num_classes=10))
    torch.manual_seed(0)
    for net in (ref, own):  # zero-initialized output layers would make every model output 0
        for p in net.parameters():
            p.data += 0.01 * torch.randn_like(p)
    return ref.to(device).eval(), own.to(device).eval()


def diffusers_cfg_loop(unet, scheduler, x, y, steps: int, guidance_scale: float, null: int) -> torch.Tensor:
    """CFG DDIM the way a diffusers user writes it: two halves in one batch, combine, scheduler.step."""
    scheduler.set_timesteps(steps)
    y_both = torch.cat([y, torch.full_like(y, null)])
    for t in scheduler.timesteps:
        eps = unet(torch.cat([x, x]), t, class_labels=y_both).sample
        eps_c, eps_u = eps.chunk(2)
        x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return x.cpu()


def forward_flops(net, args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*args)
    return counter.get_total_flops()


def matmul_peak(bench: Bench, n: int | None = None) -> float:
    """TFLOP/s of an n³ matmul (default 8192 on CUDA, 2048 on the CPU) in the run's dtype, timed like the models."""
    n = n or (8192 if bench.cuda else 2048)
    dtype = torch.bfloat16 if bench.autocast_dtype is not None else torch.float32
    a = torch.randn(n, n, device=bench.device, dtype=dtype)
    b = torch.randn(n, n, device=bench.device, dtype=dtype)
    sec, _ = bench.time(lambda: a @ b)
    return 2 * n ** 3 / sec / 1e12


def run(a: argparse.Namespace) -> dict:
    from diffusers import DDIMScheduler

    from guidekit.diffusion.denoiser import ModelDenoiser
    from guidekit.diffusion.schedule import NoiseSchedule
    from guidekit.guidance.cfg import ClassifierFreeGuidance
    from guidekit.models import count_parameters
    from guidekit.models.diffusers_unet import DiffusersUNet
    from guidekit.sampling.generate import generate
    from guidekit.sampling.noise import Noise

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          "cpu" if a.device == "auto" else a.device)
    bench = Bench(device, a.dtype, a.repeats, a.warmup)
    if bench.cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    B, steps, w = a.batch, a.steps, a.w
    FB = a.forward_batch or B
    ref, own = build_models(a.small, device)
    wrapped = DiffusersUNet(ref, num_train_timesteps=1000, null_class_index=10)
    n_ref, n_own = count_parameters(ref), count_parameters(own)
    rows, out = [], {"device": str(device), "dtype": a.dtype, "batch": B, "forward_batch": FB, "steps": steps, "w": w,
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "params": {"diffusers": n_ref, "guidekit_unet": n_own}}

    out["rows"] = rows

    def row(name, d_sec, g_sec, d_mem, g_mem, images):
        d_ips, g_ips = images / d_sec, images / g_sec
        rows.append({"row": name, "diffusers_img_s": d_ips, "guidekit_img_s": g_ips, "ratio": g_ips / d_ips,
                     "diffusers_peak_mib": d_mem, "guidekit_peak_mib": g_mem})
        print(f"measured: {name}: diffusers {d_ips:.1f} img/s, guidekit {g_ips:.1f} img/s ({g_ips / d_ips:.2f}x)",
              flush=True)
        save(a, out)

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    d_fwd = d_smp = g_flops = xty = y = None
    guidekit_sample = None  # the CFG sampling call, once the sampling rows define it
    if a.rows in ("all", "forward"):
        # (1) forward, no grad
        g = torch.Generator().manual_seed(1)
        x = torch.randn(FB, 1, 32, 32, generator=g).to(device)
        t = torch.randint(0, 1000, (FB,), generator=g).to(device)
        y = torch.randint(0, 10, (FB,), generator=g).to(device)
        with torch.no_grad():
            d_fwd, d_mem = bench.time(lambda: ref(x, t, class_labels=y).sample)
            g_fwd, g_mem = bench.time(lambda: own(x, t, y))
        row(f"forward (no grad, batch {FB})", d_fwd, g_fwd, d_mem, g_mem, FB)
        with bench.autocast():
            d_flops, g_flops = forward_flops(ref, (x, t, y)), forward_flops(own, (x, t, y))
        peak = matmul_peak(bench)
        out["forward_tflops"] = {"diffusers": d_flops / d_fwd / 1e12, "guidekit_unet": g_flops / g_fwd / 1e12,
                                 "matmul_peak": peak, "gflop_per_forward": {"diffusers": d_flops / 1e9,
                                                                            "guidekit_unet": g_flops / 1e9}}
        xty = (x, t, y)

    if a.rows == "all":
        # (2) CFG DDIM sampling
        schedule = NoiseSchedule.linear(1000)
        seeds = list(range(B))
        labels = torch.arange(B) % 10

        def cfg_sample(net):
            cfg = ClassifierFreeGuidance(ModelDenoiser(net, schedule, "eps", num_classes=10), w)
            return generate(cfg, schedule, (1, 32, 32), seeds, {"y": labels}, "ddim", steps, device=device)

        guidekit_sample = cfg_sample

        def reference_sample():
            x_T = Noise(seeds, device).randn((1, 32, 32))
            return diffusers_cfg_loop(ref, scheduler, x_T, labels.to(device), steps, 1 + w, null=10)

        with torch.no_grad():
            d_smp, d_mem = bench.time(reference_sample)
            theirs = bench.last
            ga_smp, ga_mem = bench.time(lambda: guidekit_sample(wrapped))
            mine = bench.last
            gb_smp, gb_mem = bench.time(lambda: guidekit_sample(own))
        row(f"CFG DDIM-{steps}: guidekit on the same diffusers net", d_smp, ga_smp, d_mem, ga_mem, B)
        row(f"CFG DDIM-{steps}: guidekit's own UNet", d_smp, gb_smp, d_mem, gb_mem, B)
        if a.dtype != "fp32":  # correctness in fp32: the same DDIM math on the same network and initial noise
            with torch.no_grad():
                mine, theirs = guidekit_sample(wrapped), reference_sample()
        out["max_abs_diff_fp32"] = (mine - theirs).abs().max().item()
        out["max_abs_sample_fp32"] = theirs.abs().max().item()  # random weights: x̂0 is large, so also give the scale

    if a.rows == "forward":
        if a.fast:
            fast_rows(a, bench, (ref, own), xty, None, None, (d_fwd, None, None), row, out, g_flops)
        return out

    # (3) training step: the same plain loop for both models
    ab = bench.alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, device=device)

    def train_step_fn(net, call):
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=bench.cuda)
        x0 = torch.randn(B, 1, 32, 32, device=device).clamp(-1, 1)
        y_ = y[:B] if y is not None and len(y) >= B else torch.randint(0, 10, (B,), device=device)

        def step():
            for _ in range(a.train_steps):
                tt = torch.randint(0, 1000, (B,), device=device)
                eps = torch.randn_like(x0)
                a_t = ab[tt].view(-1, 1, 1, 1)
                x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
                loss = F.mse_loss(call(x_t, tt, y_).float(), eps)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return step

    d_tr, d_mem = bench.time(train_step_fn(ref, lambda x_, t_, y_: ref(x_, t_, class_labels=y_).sample))
    g_tr, g_mem = bench.time(train_step_fn(own, own))
    row("train step (fwd+bwd+AdamW)", d_tr, g_tr, d_mem, g_mem, B * a.train_steps)
    if a.fast and a.rows == "all":
        fast_rows(a, bench, (ref, own), xty, guidekit_sample, train_step_fn, (d_fwd, d_smp, d_tr), row, out, g_flops)
    elif a.fast:
        train_rows(a, bench, (ref, own), train_step_fn, d_tr, row, out, "bf16" if a.dtype == "bf16" else "fp32")
    return out


def save(a: argparse.Namespace, out: dict) -> None:
    """Rewrite --json after every row, so a run cut short keeps what it measured."""
    if a.json:
        with open(a.json + ".tmp", "w") as fh:
            json.dump(out, fh, indent=2)
        os.replace(a.json + ".tmp", a.json)


def attempt(out: dict, name: str, fn) -> None:
    """Run one fast-path row; an error is recorded (and printed) instead of ending the benchmark."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a failing optional row must not lose the measured ones
        out.setdefault("errors", []).append({"row": name, "error": f"{type(e).__name__}: {e}"})
        print(f"FAILED: {name}: {type(e).__name__}: {e}", flush=True)


def fast_rows(a, bench, nets, xty, guidekit_sample, train_step_fn, diffusers_sec, row, out, flops) -> None:
    """guidekit's fast path (guidekit.fast) on copies of its UNet: forward, CFG sampling, training step; on a GPU
    both our own CUDA-graph capture (eager kernels) and torch.compile (with its CUDA graphs)."""
    import copy

    from guidekit.fast import Fast

    precision = "bf16" if a.dtype == "bf16" else "fp32"
    own = nets[1]
    d_fwd, d_smp, d_tr = diffusers_sec
    (x, t, y) = xty
    variants = [Fast(precision=precision, channels_last=bench.cuda, compile=True, cuda_graphs=bench.cuda)]
    if bench.cuda:
        # graphs alone, contiguous (what --cuda-graphs runs now): the 2026-11-26 H100 run had channels_last here too
        variants.insert(0, Fast(precision=precision, channels_last=False, compile=False, cuda_graphs=True))
    for fast in variants:
        net = fast.wrap(copy.deepcopy(own), bench.device)
        tag = describe(fast)

        def forward(net=net, tag=tag, fast=fast):
            with torch.no_grad():
                f_fwd, f_mem = bench.time(lambda: net(x, t, y))
            row(f"forward (no grad, batch {len(x)}), guidekit fast {tag}", d_fwd, f_fwd, float("nan"), f_mem, len(x))
            out["forward_tflops"][f"guidekit_fast {tag}"] = flops / f_fwd / 1e12

        def sample(net=net, tag=tag):
            with torch.no_grad():
                f_smp, f_mem = bench.time(lambda: guidekit_sample(net))
            row(f"CFG DDIM-{a.steps}: guidekit fast {tag}", d_smp, f_smp, float("nan"), f_mem, a.batch)

        attempt(out, f"forward {tag}", forward)
        if guidekit_sample is not None:
            attempt(out, f"sample {tag}", sample)

    if train_step_fn is not None:
        train_rows(a, bench, nets, train_step_fn, d_tr, row, out, precision)


def train_rows(a, bench, nets, train_step_fn, d_tr, row, out, precision) -> None:
    """Training-step variants of guidekit's UNet (--train-variants): torch.compile through guidekit.fast.Fast (NHWC
    and NCHW; reduce-overhead = with CUDA graphs; max-autotune-no-cudagraphs = Inductor's tuned convolution and
    matmul templates) and the whole step as one CUDA graph (guidekit.training.graphed), each against diffusers'
    eager step. guidekit's rows autotune cuDNN (guidekit.fast's default, forward and backward);
    diffusers-autotuned times diffusers' eager step with the same autotuning, for reference."""
    import copy

    from guidekit.fast import Fast, cudnn_benchmark

    ref, own = nets

    def compiled(channels_last: bool, mode: str | None, layout_opt: bool = False):
        def fn():
            fast = Fast(precision=precision, channels_last=channels_last, compile=True,
                        cuda_graphs=mode == "reduce-overhead", compile_mode=mode)
            net = fast.wrap(copy.deepcopy(own), bench.device)
            tag = ", ".join(["torch.compile" + (f" {mode}" if mode else ""), "NHWC" if channels_last else "NCHW"]
                            + ["Inductor layout optimization forced"] * layout_opt)
            # on a GPU Inductor skips its channels_last layout pass for training graphs whose 3x3 convolutions have
            # 2x more input than output channels (the decoder's skip concatenations): layout_opt forces it
            with cudnn_benchmark(bench.cuda), torch._inductor.config.patch(force_layout_optimization=layout_opt):
                f_tr, f_mem = bench.time(train_step_fn(net.net, net))
                row(f"train step, guidekit fast ({tag})", d_tr, f_tr, float("nan"), f_mem, a.batch * a.train_steps)
                if a.profile and channels_last == bench.cuda and mode in (None, "reduce-overhead"):
                    out.setdefault("train_profile", {})[mode or "default"] = profile(train_step_fn(net.net, net), bench)
        return fn

    def graphed(compile_: bool):
        def fn():
            fast = Fast(precision=precision, channels_last=compile_, compile=compile_)
            net = fast.wrap(copy.deepcopy(own), bench.device)
            with cudnn_benchmark(bench.cuda):
                f_tr, f_mem = bench.time(graphed_step_fn(a, bench, net, precision))
            tag = "one CUDA graph per step" + (", torch.compile, NHWC" if compile_ else ", eager, NCHW")
            row(f"train step, guidekit fast ({tag})", d_tr, f_tr, float("nan"), f_mem, a.batch * a.train_steps)
        return fn

    def diffusers_autotuned():
        with cudnn_benchmark(True):
            f_tr, f_mem = bench.time(train_step_fn(ref, lambda x_, t_, y_: ref(x_, t_, class_labels=y_).sample))
        row("train step, diffusers eager with cuDNN autotuning (reference)", d_tr, f_tr, float("nan"), f_mem,
            a.batch * a.train_steps)

    variants = {"compile": compiled(bench.cuda, None), "compile-nchw": compiled(False, None),
                "reduce-overhead": compiled(True, "reduce-overhead"),
                "reduce-overhead-layout-opt": compiled(True, "reduce-overhead", layout_opt=True),
                "max-autotune": compiled(bench.cuda, "max-autotune-no-cudagraphs"),
                "graphed": graphed(False), "graphed-compile": graphed(True), "diffusers-autotuned": diffusers_autotuned}
    cuda_only = {"compile-nchw", "reduce-overhead", "reduce-overhead-layout-opt", "graphed", "graphed-compile",
                 "diffusers-autotuned"}
    for name in a.train_variants.split(","):
        if name not in variants:
            raise SystemExit(f"--train-variants: {name!r} is not one of {', '.join(variants)}")
        if bench.cuda or name not in cuda_only:
            attempt(out, f"train {name}", variants[name])


def graphed_step_fn(a, bench, net, precision: str):
    """a.train_steps replays of guidekit.training.graphed.GraphedTrainStep on the train-step loss of the plain loop;
    net: a guidekit.fast.FastForward (its channels_last and torch.compile apply inside the graph)."""
    from guidekit.training.graphed import GraphedTrainStep

    B, device = a.batch, bench.device
    net.train()
    ab = bench.alphas_cumprod

    def loss_fn(x0, y_):
        tt = torch.randint(0, 1000, (B,), device=device)
        eps = torch.randn_like(x0)
        a_t = ab[tt].view(-1, 1, 1, 1)
        return F.mse_loss(net(a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps, tt, y_).float(), eps)

    step = GraphedTrainStep(loss_fn, list(net.parameters()), lr=1e-4,
                            dtype=torch.bfloat16 if precision == "bf16" else None)
    x0 = torch.randn(B, 1, 32, 32, device=device).clamp(-1, 1)
    y_ = torch.randint(0, 10, (B,), device=device)
    for _ in range(step.warmup + 1):  # eager warm-up steps and the capture, before the timing starts
        step(x0, y_)

    def run():
        for _ in range(a.train_steps):
            step(x0, y_)
    return run


def profile(fn, bench) -> str:
    """The top CUDA kernels of a few calls of fn (torch.profiler), as text: where a training step's time goes; then
    the copy ops (aten::copy_/_to_copy/clone/contiguous) by input shape and by Python caller, to name their source."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with bench.autocast():
        fn()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.cuda else [])
        with prof(activities=activities, record_shapes=True, with_stack=True) as p:
            fn()
            bench.sync()
    key = "self_cpu_time_total" if not bench.cuda else (
        "self_device_time_total" if hasattr(p.key_averages()[0], "self_device_time_total") else "self_cuda_time_total")
    parts = [p.key_averages().table(sort_by=key, row_limit=30)]
    copies = ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")
    for title, grouped in (("copy ops by input shape", p.key_averages(group_by_input_shape=True)),
                           ("copy ops by caller (5 frames)", p.key_averages(group_by_stack_n=5))):
        rows = sorted((e for e in grouped if e.key in copies), key=lambda e: -getattr(e, key))[:25]
        lines = [f"## {title}"]
        for e in rows:
            where = e.input_shapes if "shape" in title else " <- ".join(e.stack[:5])
            if not where:
                continue
            lines.append(f"{e.key:18s} calls {e.count:5d}  self {getattr(e, key) / 1e3:9.2f} ms  {where}")
        parts.append("\n".join(lines))
    text = "\n\n".join(parts)
    print(text, flush=True)
    return text


def describe(fast) -> str:
    """'(compile, channels_last, CUDA graphs)' for a row name."""
    parts = [n for n, on in (("compile", fast.compile), ("channels_last", fast.channels_last),
                             ("CUDA graphs", fast.cuda_graphs)) if on]
    return "(" + ", ".join(parts) + ")"


def markdown(r: dict) -> str:
    mem = "peak CUDA MiB" if r["device"].startswith("cuda") else "peak-RSS growth MiB"
    lines = [f"device={r['device']} dtype={r['dtype']} threads={r['threads']} batch={r['batch']} "
             f"steps={r['steps']} w={r['w']} torch={r['torch']}",
             f"parameters: diffusers UNet2DModel {r['params']['diffusers']:,}, "
             f"guidekit UNet {r['params']['guidekit_unet']:,}", "",
             f"| row | diffusers img/s | guidekit img/s | guidekit / diffusers | {mem} (diffusers / guidekit) |",
             "| --- | --- | --- | --- | --- |"]
    for x in r["rows"]:
        lines.append(f"| {x['row']} | {x['diffusers_img_s']:.1f} | {x['guidekit_img_s']:.1f} | {x['ratio']:.2f} | "
                     f"{x['diffusers_peak_mib']:.0f} / {x['guidekit_peak_mib']:.0f} |".replace("nan / ", "— / "))
    if "forward_tflops" in r:  # --rows all / forward
        f = r["forward_tflops"]
        lines.append(f"| forward TFLOP/s (GFLOP per forward) | {f['diffusers']:.3g} "
                     f"({f['gflop_per_forward']['diffusers']:.2f}) | {f['guidekit_unet']:.3g} "
                     f"({f['gflop_per_forward']['guidekit_unet']:.2f}) | {f['guidekit_unet'] / f['diffusers']:.2f} | |")
        lines.append(f"| fraction of matmul peak ({f['matmul_peak']:.3g} TFLOP/s) | "
                     f"{f['diffusers'] / f['matmul_peak']:.1%} | {f['guidekit_unet'] / f['matmul_peak']:.1%} | | |")
        for key in [k for k in f if k.startswith("guidekit_fast")]:
            lines.append(f"| forward TFLOP/s, {key.replace('_', ' ')} (fraction of matmul peak) | | {f[key]:.3g} "
                         f"({f[key] / f['matmul_peak']:.1%}) | {f[key] / f['diffusers']:.2f} | |")
    if "max_abs_diff_fp32" in r:  # --rows all
        lines.append(f"| correctness: max abs diff, guidekit on the diffusers net vs diffusers loop (fp32) | | "
                     f"{r['max_abs_diff_fp32']:.2e} (max abs sample {r['max_abs_sample_fp32']:.3g}) | | |")
    for e in r.get("errors", []):
        lines.append(f"FAILED row {e['row']}: {e['error']}")
    for mode, text in r.get("train_profile", {}).items():
        lines += ["", f"kernel profile of the compiled training step ({mode}):", "```", text, "```"]
    if 1000 % r["steps"] and "max_abs_diff_fp32" in r:
        lines.append(f"note: 1000 is not a multiple of steps={r['steps']}, so diffusers' DDIM steps from t to "
                     f"t - 1000 // steps rather than to its next trailing timestep; expect a real difference above")
    return "\n".join(lines)


def main(argv=None) -> None:
    a = parse_args(argv)
    r = run(a)
    print(markdown(r))
    save(a, r)


if __name__ == "__main__":
    sys.exit(main())
