"""How much of a Gaussian's spread each sampler keeps at a given number of steps, with the exact denoiser."""

import argparse

import torch

from guidekit.diffusion import NoiseSchedule
from guidekit.sampling import make_step, sample


class OneGenerator:
    """Fast batch noise (per-image streams are not needed for a statistic)."""

    def __init__(self, n: int):
        self.n, self.g = n, torch.Generator().manual_seed(1)

    def __len__(self):
        return self.n

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--mean", type=float, default=0.3)
    a = p.parse_args()
    schedule = NoiseSchedule.linear()
    print("| data std | sampler | steps | sample std / data std |\n| --- | --- | --- | --- |")
    for std in (0.2, 0.5, 1.0):
        def eps(x, t, cond):
            ab = schedule.alpha_bar(t).view(-1, 1, 1, 1).to(x.dtype)
            return (1 - ab).sqrt() * (x - ab.sqrt() * a.mean) / (ab * std ** 2 + 1 - ab)
        for name, steps in (("ddim", 20), ("ddim", 50), ("ddim", 200), ("dpmpp-2m", 10), ("dpmpp-2m", 20),
                            ("dpmpp-2m", 50), ("ddpm", 100), ("ddpm", 1000)):
            noise = OneGenerator(a.n)
            x = torch.randn(a.n, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            out = sample(eps, x, schedule.timesteps(steps), {}, make_step(name, schedule), noise)
            print(f"| {std} | {name} | {steps} | {(out.std() / std).item():.3f} |")


if __name__ == "__main__":
    main()
