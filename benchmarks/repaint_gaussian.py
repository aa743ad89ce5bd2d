"""RePaint (Lugmayr et al. 2022) schedules on a correlated 2-pixel Gaussian with the exact denoiser: how far the
inpainted pixel's mean and spread land from the true conditional p(b | a), per schedule and NFE.

x0 = (a, b) ~ N(0, s²·[[1, ρ], [ρ, 1]]); a is known, b generated. The truth is b | a ~ N(ρ·a, s²·(1 − ρ²)).
Usage: python benchmarks/repaint_gaussian.py [--n 4000]
"""

import argparse

import torch

from guidekit.diffusion import NoiseSchedule
from guidekit.sampling import make_step, sample
from guidekit.sampling.repaint import RePaintConstraint, count_nfe, jump_length_for, repaint_levels
from sampler_spread import OneGenerator

# sampler:steps:jump in training timesteps:r — the paper's DDPM-250 with j = 10 (40 timesteps), then schedules
# at ≤ 1/4 of its 2,410 evaluations
ROWS = ("ddpm:250:40:1,ddpm:250:40:10,ddim:50:40:1,ddim:50:40:10,ddpm:50:40:1,ddpm:50:40:10,ddpm:50:40:12,"
        "ddpm:50:20:10,ddpm:100:20:5,ddpm:100:40:5")


class CorrelatedEps:
    """Exact ε(x_t, t) for x0 ~ N(0, Σ): p_t = N(0, ᾱΣ + (1 − ᾱ)I), so ε = √(1 − ᾱ)·(ᾱΣ + (1 − ᾱ)I)⁻¹·x_t."""

    def __init__(self, schedule: NoiseSchedule, cov: torch.Tensor):
        self.schedule, self.cov = schedule, cov.double()

    def __call__(self, x, t, cond):
        ab = float(self.schedule.alpha_bar(float(t[0])))
        cov_t = ab * self.cov + (1 - ab) * torch.eye(len(self.cov), dtype=torch.float64)
        eps = (1 - ab) ** 0.5 * torch.linalg.solve(cov_t, x.flatten(1).double().T).T
        return eps.view_as(x).to(x.dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="samples per row")
    p.add_argument("--rho", type=float, default=0.95, help="correlation of the two pixels")
    p.add_argument("--s", type=float, default=0.5, help="pixel standard deviation")
    p.add_argument("--a", type=float, default=1.0, help="the known pixel's value")
    p.add_argument("--rows", default=ROWS, help="comma-separated sampler:steps:jump_timesteps:r")
    a = p.parse_args()
    schedule = NoiseSchedule.linear(1000)
    den = CorrelatedEps(schedule, a.s ** 2 * torch.tensor([[1.0, a.rho], [a.rho, 1.0]]))
    x0, mask = torch.tensor([a.a, 0.0]).view(1, 1, 1, 2), torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    mean, sd = a.rho * a.a, a.s * (1 - a.rho ** 2) ** 0.5
    print(f"truth: b | a = {a.a:g} ~ N({mean:.4f}, {sd:.4f}²); n = {a.n}, standard error of a mean ≈ "
          f"{sd / a.n ** 0.5:.4f}\n")
    print("| sampler | steps | j (timesteps) | r | NFE | mean(b) − E[b \\| a] | std(b) / sd(b \\| a) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in a.rows.split(","):
        sampler, steps, jump_t, r = row.split(":")
        steps, jump_t, r = int(steps), int(jump_t), int(r)
        j = jump_length_for(jump_t, steps, schedule.num_timesteps)
        levels = repaint_levels(schedule.timesteps(steps, "trailing"), j, r)
        x = sample(den, torch.randn(a.n, 1, 1, 2, generator=torch.Generator().manual_seed(0)), levels, {},
                   make_step(sampler, schedule), OneGenerator(a.n), [RePaintConstraint(x0, mask, schedule)])
        b = x[:, 0, 0, 1].double()
        print(f"| {sampler} | {steps} | {j} ({jump_t}) | {r} | {count_nfe(levels)} | {b.mean().item() - mean:+.4f} | "
              f"{b.std().item() / sd:.3f} |", flush=True)


if __name__ == "__main__":
    main()
