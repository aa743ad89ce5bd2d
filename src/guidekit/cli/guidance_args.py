"""The options of the guidance methods after CFG, shared by sample, control, edit, inpaint and eval."""

from __future__ import annotations

import argparse
import math

from guidekit.pipelines.settings import RULES


def number_pair(name: str, example: str, inf_hi: bool = False):
    """argparse type: two comma-separated numbers lo,hi with lo < hi ('inf' allowed for hi when inf_hi)."""

    def parse(text: str) -> tuple[float, float]:
        parts = [p.strip() for p in text.split(",")]
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes two numbers lo,hi like {example}, got {text!r}")
        if not (math.isfinite(lo) and (math.isfinite(hi) or (inf_hi and hi == math.inf)) and 0 <= lo < hi):
            raise argparse.ArgumentTypeError(f"{name} needs 0 <= lo < hi{' (hi may be inf)' if inf_hi else ''}, like "
                                             f"{example}, got {text!r}")
        return lo, hi
    parse.__name__ = name
    return parse


def add_frontier_args(p: argparse.ArgumentParser) -> None:
    """--guidance-rule and its parameters, --rescale, --guidance-interval, --guide-model, --dynamic-threshold, --cads."""
    from guidekit.cli.common import nonneg_float, nonneg_int

    g = p.add_argument_group("guidance after CFG (guidekit sweep guidance compares them)")
    g.add_argument("--guidance-rule", choices=list(RULES), default="cfg",
                   help="how the two predictions combine: cfg (Ho & Salimans), apg (Sadat et al. 2024: --apg-eta, "
                        "--apg-momentum, --apg-threshold), cfg-zero-star (Fan et al. 2025: optimised scale, "
                        "--zero-steps zeroed first steps), cfgpp (Chung et al. 2024, DDIM only: w is its λ in [0, 1])")
    g.add_argument("--apg-eta", type=nonneg_float("--apg-eta"), default=0.0,
                   help="APG: share of the update parallel to the conditional x̂0 that is kept (0 = the paper's)")
    g.add_argument("--apg-momentum", type=float, default=0.0, help="APG: momentum β in (-1, 1), e.g. -0.5; 0 = none")
    g.add_argument("--apg-threshold", type=float, default=math.inf,
                   help="APG: cap r on the update's norm in x̂0 (default none)")
    g.add_argument("--zero-steps", type=nonneg_int("--zero-steps"), default=1,
                   help="CFG-Zero*: first steps that predict zero velocity without the network (default 1)")
    g.add_argument("--rescale", type=float, default=0.0, metavar="PHI",
                   help="CFG rescale φ in [0, 1] (Lin et al. 2023; 0.7 in the paper): the guided x̂0 brought back to "
                        "the conditional x̂0's std")
    g.add_argument("--guidance-interval", type=number_pair("--guidance-interval", "0.3,5", inf_hi=True),
                   default=None, metavar="LO,HI",
                   help="guide only where σ = √((1−ᾱ)/ᾱ) lies in (LO, HI] (Kynkäänniemi et al. 2024); one network "
                        "pass elsewhere, so the NFE falls")
    g.add_argument("--guide-model", metavar="DIR", default=None,
                   help="autoguidance (Karras et al. 2024): a weaker model of the same conditioning (a smaller or "
                        "earlier checkpoint) in place of ∅: eps = eps_good + w·(eps_good − eps_bad)")
    g.add_argument("--dynamic-threshold", type=float, nargs="?", const=0.995, default=None, metavar="P",
                   help="Imagen's dynamic thresholding of x̂0 at percentile P (default 0.995) instead of clipping")
    g.add_argument("--cads", type=number_pair("--cads", "0.6,0.9"), default=None, metavar="TAU1,TAU2",
                   help="CADS (Sadat et al. 2023): anneal the condition with noise for t in (τ1, 1], fully noised "
                        "beyond τ2 (t = 1 is pure noise); --cads-noise s, --cads-psi ψ")
    g.add_argument("--cads-noise", type=nonneg_float("--cads-noise"), default=0.25, help="CADS's noise scale s")
    g.add_argument("--cads-psi", type=nonneg_float("--cads-psi"), default=1.0, help="CADS's rescale mix ψ in [0, 1]")


def frontier_from_args(args, model, device) -> dict:
    """The Guidance fields of these options (the guide model loaded; pipelines.guided checks it against the model)."""
    from guidekit.cli.common import load_fast_model

    out = {"rule": getattr(args, "guidance_rule", "cfg")}
    if not hasattr(args, "guidance_rule"):
        return out
    bad = None
    if args.guide_model:
        bad = load_fast_model(args.guide_model, args, device)
    out.update(apg_eta=args.apg_eta, apg_momentum=args.apg_momentum, apg_threshold=args.apg_threshold,
               zero_steps=args.zero_steps, rescale=args.rescale, interval=args.guidance_interval, guide_model=bad,
               dynamic_threshold=args.dynamic_threshold, cads=args.cads, cads_noise=args.cads_noise,
               cads_psi=args.cads_psi)
    return out
