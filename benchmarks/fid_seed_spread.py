"""How far a RePaint row's FID, masked L2 and accuracy move when only the noise seeds change (same images, masks).

Answers whether two rows that differ only in their noise streams (e.g. the same command on a CPU and on a GPU,
whose generators draw different numbers from the same seed) can be told apart at a given n.
"""

import argparse
import statistics

import torch

from guidekit.checkpoints import load_model
from guidekit.data import load_dataset
from guidekit.diffusion import NULL
from guidekit.pipelines import Guidance, SamplerSettings
from guidekit.pipelines import inpaint_guided, masked_errors
from guidekit.masks import make_mask
from guidekit.metrics.evaluate import evaluate
from guidekit.metrics.network import load_network, network_id
from guidekit.metrics.reference import reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="fmnist-cfg")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--mask", default="half")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--jump-length", type=int, default=2)
    p.add_argument("--r", type=int, default=1)
    p.add_argument("--sets", type=int, default=4, help="noise seed sets; set k uses seeds k·10⁶ + (0 … n−1)")
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the usual places)")
    a = p.parse_args()
    model = load_model(a.model)
    data = load_dataset("fashion-mnist", split="test", data_dir=a.data)
    truth, truth_labels = data.images(slice(0, a.n)), data.labels[:a.n]
    mask = make_mask(a.mask, truth.shape[-1], a.n, torch.Generator().manual_seed(0))  # the sweep's masks (--seed 0)
    evaluator = load_network()
    ref = reference(evaluator, load_dataset("fashion-mnist", split="test", data_dir=a.data), network_id(evaluator))
    settings = SamplerSettings(a.sampler, a.steps, 0.0, "trailing", True, a.n)
    print(f"{a.model}, {a.mask} mask, {a.sampler}-{a.steps}, jump length {a.jump_length}, r = {a.r}, n = {a.n}")
    print("| noise seeds | masked L2 | FID-FMNIST | KID ×10³ | accuracy |\n| --- | --- | --- | --- | --- |")
    rows = []
    for k in range(a.sets):
        seeds = list(range(k * 10 ** 6, k * 10 ** 6 + a.n))
        images, _ = inpaint_guided(model, truth, mask, torch.full((a.n,), NULL), seeds, Guidance(), settings,
                                   a.jump_length, a.r)
        l2, _ = masked_errors(images, truth, mask)
        m = evaluate(images, truth_labels, evaluator, ref)
        rows.append((float(l2.mean()), m["fid"], m["kid"] * 1e3, m["accuracy"]))
        print(f"| {seeds[0]} … {seeds[-1]} | {rows[-1][0]:.4f} | {rows[-1][1]:.2f} | {rows[-1][2]:.1f} | "
              f"{rows[-1][3]:.3f} |", flush=True)
    cols = list(zip(*rows))
    sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
    print(f"| mean ± sd over {a.sets} | {statistics.mean(cols[0]):.4f} ± {sd[0]:.4f} | "
          f"{statistics.mean(cols[1]):.2f} ± {sd[1]:.2f} | {statistics.mean(cols[2]):.1f} ± {sd[2]:.1f} | "
          f"{statistics.mean(cols[3]):.3f} ± {sd[3]:.3f} |")


if __name__ == "__main__":
    main()
