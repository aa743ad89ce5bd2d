"""guidekit vs diffusers' StableDiffusionPipeline on the same pipeline folder: text-to-image img/s and peak memory.

Builds Stable-Diffusion-class components in memory with fixed seeds (nothing is downloaded), saves them as one
pipeline folder in a temporary directory, and loads that folder twice: with guidekit.checkpoints.load_model (its
own sampling loop, guidekit.pipelines.sample_guided) and with StableDiffusionPipeline.from_pretrained. Both sides
then make the same images: the same prompts, negative prompt, initial latents, DDIM steps (trailing spacing, η = 0)
and guidance scale (CFG as one batched forward of the conditional and negative halves in both), prompt encoding
and VAE decoding included in the timed call.

  --unet tiny   tests/sd_tiny.py's tiny random pipeline (8×8×4 latents, 16×16 images)
  --unet sd15   the Stable Diffusion 1.5 UNet2DConditionModel config (block_out_channels 320/640/1280/1280,
                layers_per_block 2, cross_attention_dim 768, attention_head_dim 8, ~860M parameters) with random
                weights at --latent × --latent latents; a small random VAE (4 levels, 8× upsampling like SD's,
                widths 32/32/64/64) and a small random CLIP text encoder (2 layers of width 768, 77 tokens), since
                the UNet dominates the cost

Each side runs in its own fresh `multiprocessing` spawn child, so its memory is its own, and the parent
interleaves their calls (one warm-up each, then --repeats rounds, the order flipped every round; the idle child
waits on its pipe), so a drift in the machine's speed hits both sides alike. Memory: on CUDA
torch.cuda.max_memory_allocated over the calls (weights included); on the CPU the child's peak resident set over
the calls (VmHWM in /proc/self/status, reset after loading by writing 5 to /proc/self/clear_refs: interpreter, torch,
weights and sampling; where it cannot be reset, resource.getrusage(RUSAGE_SELF).ru_maxrss, which includes loading)
and its growth over the loaded process's RSS (the activations). Reported: img/s (median of the timed calls), the
guidekit / diffusers ratio, peak memory, and the max abs difference of the two sides' images in [0, 1] (fp32: float
rounding, ~1e-4 or less; a check that the comparison is like for like).

Weights: from_pretrained (which guidekit's loader also calls) leaves a CPU model's weights in a private mmap of its
safetensors files. On the 2-core development VM that made the same UNet forward up to 1.7× faster or slower from one
process to the next (the page cache's huge pages, by chance), more than any difference between the sides, so on the
CPU both sides copy their weights into their own memory after loading (--keep-mmap: leave them mapped).

--precision bf16 runs guidekit's UNet under bf16 autocast (guidekit.fast; VAE and text encoder fp32) and loads
diffusers' pipeline with torch_dtype=torch.bfloat16 (every part in bf16), so bf16 differences are bf16 rounding.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SIDES = ("guidekit", "diffusers")
PROMPTS = ["a photo of a red bag", "a dark coat", "a small blue shoe", "a light dress", "a large dog", "the cat"]
NEGATIVE = "blurry"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unet", choices=("tiny", "sd15"), default="tiny", help="which UNet (see above)")
    p.add_argument("--latent", type=int, default=0, help="latent side for --unet sd15 (default 16 on the CPU, 64 on "
                   "a GPU = 512-pixel images); tiny is always 8")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="guidekit: autocast precision of the UNet; diffusers: the pipeline's torch_dtype")
    p.add_argument("--compile", action="store_true", help="guidekit: torch.compile the UNet (guidekit.fast)")
    p.add_argument("--cuda-graphs", action="store_true", help="guidekit: CUDA-graph replay (with --compile: "
                   "torch.compile's reduce-overhead mode)")
    p.add_argument("--compile-diffusers", action="store_true", help="diffusers: torch.compile(pipe.unet) "
                   "(default: eager, as the pipeline ships)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (trailing spacing)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="CFG scale (guidekit's w = scale − 1)")
    p.add_argument("--batch", type=int, default=2, help="images per call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per side after one warm-up (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in each child (0 = torch's default)")
    p.add_argument("--keep-mmap", action="store_true", help="CPU: leave the weights where from_pretrained puts them "
                   "(a private mmap of the safetensors files) instead of copying them into each process's own "
                   "memory; see above")
    p.add_argument("--in-process", action="store_true", help="run both sides in this process, one after the other "
                   "(seconds faster: no child imports; the CPU memory columns are then not each side's own)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    a = p.parse_args(argv)
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.unet == "tiny":
        if a.latent not in (0, 8):
            p.error("--latent is for --unet sd15; the tiny pipeline's latents are 8×8")
        a.latent = 8
    a.latent = a.latent or (64 if a.device == "cuda" else 16)
    if a.cuda_graphs and a.device != "cuda":
        p.error("--cuda-graphs needs --device cuda")
    return a


def tokenizer(root: Path, max_tokens: int):
    """A CLIP tokenizer over tests/sd_tiny.py's small vocabulary."""
    from transformers import CLIPTokenizer

    sys.path.insert(0, str(HERE.parent / "tests"))
    from sd_tiny import write_tokenizer

    write_tokenizer(root / "tokenizer-files")
    files = root / "tokenizer-files"
    return CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=max_tokens), \
        len(json.loads((files / "vocab.json").read_text()))


def sd15_pipeline(root: Path, latent: int, seed: int = 0):
    """The SD 1.5 UNet config at latent × latent with random weights, a small VAE and CLIP encoder, saved."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), in_channels=3, out_channels=3, latent_channels=4,
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=8 * latent,
                        scaling_factor=0.18215)
    tok, vocab = tokenizer(root, 77)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072,
                                           num_hidden_layers=2, num_attention_heads=12, max_position_embeddings=77,
                                           bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=1)  # SD 1.5's
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = root / "sd15-shaped"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build(a: argparse.Namespace, root: Path) -> tuple[Path, dict]:
    """The pipeline folder under root and its parameter counts."""
    import gc

    quiet()
    if a.unet == "tiny":
        sys.path.insert(0, str(HERE.parent / "tests"))
        from sd_tiny import tiny_pipeline

        _, folder = tiny_pipeline(root)
    else:
        folder = sd15_pipeline(root, a.latent)
    gc.collect()  # the parent's copy is not needed: each side loads the folder in its own process
    from safetensors import safe_open

    params = {}
    for part in ("unet", "vae", "text_encoder"):
        n = 0
        for file in (folder / part).glob("*.safetensors"):
            with safe_open(str(file), "pt") as f:
                n += sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not iterable)
        params[part] = n
    return folder, params


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def inputs(a: argparse.Namespace) -> tuple[list[str], torch.Tensor]:
    """The prompts (cycled) and the initial latents x_T of both sides."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(a.batch)]
    x_T = torch.randn((a.batch, 4, a.latent, a.latent), generator=torch.Generator().manual_seed(1))
    return prompts, x_T


class Side:
    """One side, loaded: call() times one text-to-image call of the batch (vs_diffusers.Bench: synchronized, with
    its peak memory), finish() gives its timings, peak memory and last images."""

    def __init__(self, side: str, folder: str, a: argparse.Namespace):
        sys.path.insert(0, str(HERE))
        from vs_diffusers import Bench

        quiet()
        if a.threads:
            torch.set_num_threads(a.threads)
        device = torch.device(a.device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
        self.side, self.batch, self.cuda = side, a.batch, device.type == "cuda"
        self.bench = Bench(device, "fp32", repeats=1, warmup=0)  # no outer autocast: each side runs its precision
        self.times, self.peaks = [], []
        start = time.perf_counter()
        self.fn = (guidekit_call if side == "guidekit" else diffusers_call)(folder, a, device)
        self.load_s = time.perf_counter() - start
        self.rss_loaded, self.peak_reset = reset_peak_rss()

    def call(self) -> float:
        with torch.no_grad():
            sec, peak = self.bench.time(self.fn)
        self.times.append(sec)
        self.peaks.append(peak)
        return sec

    def finish(self) -> dict:
        """Median seconds of the timed calls (all but the first, the warm-up); peak memory over every call: CUDA
        max allocated; on the CPU this process's peak RSS since loading (VmHWM, reset after loading) and its growth
        over the RSS of the loaded process (where the peak cannot be reset: ru_maxrss, load-time peak included)."""
        sec = statistics.median(self.times[1:])
        if self.peak_reset:
            rss_peak = status_mib("VmHWM")
        else:
            rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = max(self.peaks) if self.cuda else rss_peak - self.rss_loaded
        return {"side": self.side, "sec_per_call": sec, "img_s": self.batch / sec, "peak_mib": peak,
                "process_peak_rss_mib": rss_peak, "rss_loaded_mib": self.rss_loaded, "peak_reset": self.peak_reset,
                "load_s": self.load_s, "warmup_s": self.times[0], "times_s": self.times[1:],
                "images": self.bench.last.detach().float().cpu().numpy()}


def guidekit_call(folder: str, a: argparse.Namespace, device: torch.device):
    """guidekit: load_model + guidekit.fast, then prompts → sample_guided (CFG DDIM, decoded), images in [0, 1]."""
    from guidekit.checkpoints import load_model
    from guidekit.diffusion import NULL
    from guidekit.fast import Fast
    from guidekit.pipelines import Guidance, SamplerSettings, prompt_cond, sample_guided
    from guidekit.sampling.noise import GivenNoise

    prompts, x_T = inputs(a)
    model = load_model(folder, device)
    own_memory(a, model.net, model.latent.vae, model.prompts.encoder)
    model.fast = Fast.auto(device, a.precision, a.compile, a.cuda_graphs)
    labels = torch.full((a.batch,), NULL)
    settings = SamplerSettings("ddim", a.steps, 0.0, "trailing", batch_size=a.batch)
    guidance = Guidance(w=a.guidance_scale - 1)

    def call():
        images = sample_guided(model, labels, None, guidance, settings, device=device,
                               cond=prompt_cond(model, prompts, NEGATIVE), noise=GivenNoise([x_T]))
        return (images + 1) / 2
    return call


def diffusers_call(folder: str, a: argparse.Namespace, device: torch.device):
    """diffusers: StableDiffusionPipeline.from_pretrained (dtype = --precision), then one pipe(...) call."""
    from diffusers import StableDiffusionPipeline

    prompts, x_T = inputs(a)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, use_safetensors=True, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    own_memory(a, pipe.unet, pipe.vae, pipe.text_encoder)
    if a.compile_diffusers:
        pipe.unet = torch.compile(pipe.unet)
    side_px = a.latent * pipe.vae_scale_factor

    def call():
        return pipe(prompts, negative_prompt=[NEGATIVE] * a.batch, num_inference_steps=a.steps,
                    guidance_scale=a.guidance_scale, latents=x_T.to(device, dtype), height=side_px, width=side_px,
                    output_type="pt").images
    return call


def status_mib(key: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MiB; nan where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> tuple[float, bool]:
    """(RSS now in MiB, whether the peak RSS was reset to it): Linux resets VmHWM on writing 5 to clear_refs."""
    import gc

    gc.collect()  # the weights' old mmap goes once nothing refers to it
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status_mib("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, False


@torch.no_grad()
def own_memory(a: argparse.Namespace, *modules: torch.nn.Module) -> None:
    """On the CPU, copy every weight out of the safetensors mmap that from_pretrained leaves it in (both sides load
    through it) into the process's own memory, unless --keep-mmap."""
    if a.device != "cpu" or a.keep_mmap:
        return
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            t.data = t.data.clone()


def quiet() -> None:
    """No progress bars, and no deprecation note about the tiny scheduler's steps_offset (unused by trailing
    spacing)."""
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="(?s).*steps_offset")


def serve(conn, side: str, folder: str, a: argparse.Namespace) -> None:
    """A spawn child's loop: load the side, then answer "call" (one timed call) and "finish" (its results)."""
    import traceback

    try:
        s = Side(side, folder, a)
        conn.send(("ok", s.load_s))
        while True:
            command = conn.recv()
            conn.send(("ok", s.call() if command == "call" else s.finish()))
            if command == "finish":
                return
    except Exception:  # noqa: BLE001 - the parent raises it with the child's traceback
        conn.send(("error", traceback.format_exc()))


class Child:
    """Side in a fresh spawn child process, driven over a pipe; it waits (no CPU) while the other side runs."""

    def __init__(self, side: str, folder: Path, a: argparse.Namespace):
        import multiprocessing

        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))  # the child imports this module by name (it inherits sys.path)
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(theirs, side, str(folder), a), daemon=True)
        self.process.start()
        self.load_s = self._answer()

    def _answer(self):
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"the benchmark child failed:\n{value}")
        return value

    def call(self) -> float:
        self.conn.send("call")
        return self._answer()

    def finish(self) -> dict:
        self.conn.send("finish")
        out = self._answer()
        self.process.join(60)
        return out


def run(a: argparse.Namespace) -> dict:
    out = {"unet": a.unet, "latent": a.latent, "device": a.device, "precision": a.precision, "compile": a.compile,
           "cuda_graphs": a.cuda_graphs, "compile_diffusers": a.compile_diffusers,
           "keep_mmap": a.keep_mmap, "in_process": a.in_process, "threads": a.threads or torch.get_num_threads(),
           "steps": a.steps, "guidance_scale": a.guidance_scale, "batch": a.batch, "repeats": a.repeats,
           "torch": torch.__version__}
    try:
        import diffusers

        out["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sd-vs-diffusers-") as tmp:
        folder, out["params"] = build(a, Path(tmp))
        out["build_s"] = time.perf_counter() - start
        print(f"built {a.unet} pipeline ({out['params']['unet']:,} UNet parameters) in {out['build_s']:.0f} s",
              flush=True)
        sides = {s: Side(s, str(folder), a) if a.in_process else Child(s, folder, a) for s in SIDES}
        order = list(SIDES)
        for r in range(1 + a.repeats):  # a warm-up call each, then the timed calls interleaved, the order flipped
            for s in order:             # every round so a drift of the machine's speed hits both sides alike
                sec = sides[s].call()
                print(f"{'warm-up' if r == 0 else f'call {r}'}: {s} {sec:.3g} s", flush=True)
            order.reverse()
        results = {s: sides[s].finish() for s in SIDES}
    for s in SIDES:
        r = results[s]
        print(f"measured: {s}: {r['img_s']:.3g} img/s ({r['sec_per_call']:.3g} s per call of {a.batch}), "
              f"loaded in {r['load_s']:.1f} s", flush=True)
    images = {s: torch.from_numpy(results[s].pop("images")) for s in SIDES}
    out["rows"] = [results[s] for s in SIDES]
    out["ratio"] = results["guidekit"]["img_s"] / results["diffusers"]["img_s"]
    out["max_abs_diff"] = float((images["guidekit"] - images["diffusers"]).abs().max())
    out["image_shape"] = list(images["guidekit"].shape)
    out["total_s"] = time.perf_counter() - start
    return out


def markdown(r: dict) -> str:
    cuda = r["device"].startswith("cuda")
    mem = "peak CUDA MiB (max allocated)" if cuda else "peak RSS MiB of its process while sampling (+ over loaded)" \
        if not r["in_process"] else "peak RSS MiB of the shared process (+ over loaded; --in-process: not each side's)"
    fast = ", ".join(n for n, on in (("compile", r["compile"]), ("CUDA graphs", r["cuda_graphs"])) if on) or "eager"
    p = r["params"]
    lines = [(f"unet={r['unet']} latent={r['latent']}x{r['latent']} images={r['image_shape'][2]}px "
              f"device={r['device']} threads={r['threads']} precision={r['precision']} steps={r['steps']} "
              f"(DDIM, trailing) guidance_scale={r['guidance_scale']} batch={r['batch']} repeats={r['repeats']} "
              f"torch={r['torch']} diffusers={r.get('diffusers')}"),
             f"parameters: UNet {p['unet']:,}, VAE {p['vae']:,}, text encoder {p['text_encoder']:,}"
             + (" (small random VAE and text encoder: the UNet dominates)" if r["unet"] == "sd15" else ""), "",
             f"| side | img/s | s per call | {mem} | import + load s |", "| --- | --- | --- | --- | --- |"]
    for x in r["rows"]:
        how = f"guidekit ({fast})" if x["side"] == "guidekit" else \
            "diffusers StableDiffusionPipeline (" + ("torch.compile unet" if r["compile_diffusers"] else "eager") + ")"
        peak = f"{x['peak_mib']:.0f}" if cuda else f"{x['process_peak_rss_mib']:.0f} ({x['peak_mib']:+.0f})"
        lines.append(f"| {how} | {x['img_s']:.3g} | {x['sec_per_call']:.3g} | {peak} | {x['load_s']:.1f} |")
    lines.append(f"| guidekit / diffusers | {r['ratio']:.3f} | | | |")
    lines.append(f"max abs difference of the images in [0, 1]: {r['max_abs_diff']:.2e}")
    return "\n".join(lines)


def save(a: argparse.Namespace, r: dict) -> None:
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))


def main(argv=None) -> dict:
    a = parse_args(argv)
    r = run(a)
    print(markdown(r))
    save(a, r)
    return r


if __name__ == "__main__":
    main()
    sys.exit(0)
