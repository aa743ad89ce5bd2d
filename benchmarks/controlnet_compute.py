"""Training compute of a ControlNet run as a fraction of its base model's: FLOPs per image of one training step,
counted by torch.utils.flop_counter on the real networks (forward + backward), times the images each run saw.

    python benchmarks/controlnet_compute.py --base fmnist-cfg --condition canny --base-images 1138688 \
        --controlnet-images 57600
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def step_flops(net, x, t, y, **kw) -> int:
    """FLOPs of one forward + backward of net on this batch (only what autograd must compute)."""
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(net(x, t, y=y, **kw), torch.zeros_like(x)).backward()
    return counter.get_total_flops()


def main(argv=None) -> None:
    from guidekit.checkpoints import load_model
    from guidekit.conditions import get_condition
    from guidekit.models.controlnet import ControlledUNet, ControlNet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="fmnist-cfg", help="base model (zoo name or folder)")
    p.add_argument("--condition", default="canny", help="hint channels come from this condition")
    p.add_argument("--base-images", type=int, required=True, help="images the base model was trained on")
    p.add_argument("--controlnet-images", type=int, required=True, help="pair presentations of the ControlNet run")
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    base = load_model(a.base).net.train()
    x = torch.randn(a.batch, base.config.in_channels, base.config.image_size, base.config.image_size)
    t, y = torch.randint(1000, (a.batch,)), torch.zeros(a.batch, dtype=torch.long)
    per_base = step_flops(base, x, t, y) / a.batch
    hint = get_condition(a.condition)(x.clamp(-1, 1))
    for q in base.parameters():
        q.requires_grad_(False)
    net = ControlledUNet(base, ControlNet.from_unet(base, hint.shape[1])).train()
    per_cn = step_flops(net, x, t, y, hint=hint) / a.batch
    frac = a.controlnet_images * per_cn / (a.base_images * per_base)
    print(f"base training step: {per_base / 1e9:.3f} GFLOP per image; ControlNet training step (base frozen): "
          f"{per_cn / 1e9:.3f} GFLOP per image ({per_cn / per_base:.2f}x)")
    print(f"compute: {a.controlnet_images:,} pair presentations x {per_cn / 1e9:.3f} GFLOP = "
          f"{a.controlnet_images * per_cn / 1e15:.3f} PFLOP vs base {a.base_images:,} images x {per_base / 1e9:.3f} "
          f"GFLOP = {a.base_images * per_base / 1e15:.3f} PFLOP: {frac:.3f} of the base ({1 / frac:.1f}x less)")


if __name__ == "__main__":
    main()
