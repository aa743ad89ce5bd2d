"""UNet preset throughput on this machine: forward and training img/s (fp32 CPU, or bf16 on CUDA)."""

import argparse
import time

import torch

from guidekit.models import UNet, UNetConfig, count_parameters


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device} threads={torch.get_num_threads()} batch={a.batch}")
    print("| preset | parameters | forward img/s | train img/s |\n| --- | --- | --- | --- |")
    for name in a.presets.split(","):
        net = UNet(UNetConfig.preset(name, num_classes=10)).to(device)
        for p_ in net.parameters():
            p_.data += 0.01 * torch.randn_like(p_)
        x = torch.randn(a.batch, 1, 32, 32, device=device)
        t = torch.randint(0, 1000, (a.batch,), device=device)
        y = torch.randint(0, 10, (a.batch,), device=device)
        with torch.no_grad():
            fwd = timed(lambda: net(x, t, y), a.repeats)
        opt = torch.optim.AdamW(net.parameters())

        def train_step():
            net(x, t, y).square().mean().backward()
            opt.step()
            opt.zero_grad()
        train = timed(train_step, a.repeats)
        print(f"| {name} | {count_parameters(net):,} | {a.batch / fwd:.0f} | {a.batch / train:.0f} |")


if __name__ == "__main__":
    main()
