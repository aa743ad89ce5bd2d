"""Data parallelism on the CPU: 2 processes (torchrun, gloo) train to the same weights as 1 process with the same
global batch; sampling depends on per-image seeds only, so splitting the seeds across processes changes nothing."""

import csv
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from guidekit.checkpoints import LoadedModel
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.guidance import ClassifierFreeGuidance
from guidekit.models.unet import UNet, UNetConfig
from guidekit.sampling.generate import generate

TRAIN = ["-m", "guidekit.cli", "train", "--dataset", "samples", "--preset", "tiny", "--steps", "4",
         "--batch-size", "8", "--save-every", "4", "--no-progress"]


def run(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", GUIDEKIT_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def last_loss(out):
    with open(out / "log.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["loss"])


def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(TRAIN + ["--out", str(one)], tmp_path)
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"] + TRAIN
               + ["--out", str(two)], tmp_path)
    for out, processes in ((one, 1), (two, 2)):  # a real gloo group, not two independent runs
        assert json.loads((out / "checkpoints" / "step-00000004" / "state.json").read_text())["processes"] == processes
    for name in ("raw.safetensors", "model.safetensors"):
        a = load_file(one / "checkpoints" / "step-00000004" / name)
        b = load_file(two / "checkpoints" / "step-00000004" / name)
        assert a.keys() == b.keys()
        for k in a:  # all-reduce sums in another order: float rounding only
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)
    changed = load_file(one / "checkpoints" / "step-00000004" / "raw.safetensors")
    init = UNet(UNetConfig.preset("tiny", num_classes=10)).state_dict()
    assert any(not torch.equal(changed[k], init[k]) for k in init)  # it trained: the comparison is not vacuous
    assert abs(last_loss(two) - last_loss(one)) < 1e-5  # the logged loss is the global batch's in both


def test_sampling_split_across_processes_equals_one_batch():
    torch.manual_seed(0)
    net = UNet(UNetConfig.preset("tiny", num_classes=3)).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model = LoadedModel(net, NoiseSchedule.linear(1000), None, None)
    den = ClassifierFreeGuidance(model.denoiser(), 1.5)
    seeds, y = list(range(10, 18)), torch.arange(8) % 3
    kw = dict(sampler="dpmpp-2m", steps=4)
    full = generate(den, model.schedule, (1, 32, 32), seeds, {"y": y}, **kw)
    shards = [generate(den, model.schedule, (1, 32, 32), seeds[r::2], {"y": y[r::2]}, **kw) for r in range(2)]
    merged = torch.empty_like(full)
    merged[0::2], merged[1::2] = shards
    torch.testing.assert_close(merged, full, atol=1e-5, rtol=1e-5)
