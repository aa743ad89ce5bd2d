"""How much class information the frozen sentence encoder gives held-out paraphrases.

Fits classifiers from caption embeddings to the class on training captions (guidekit.text.captions, random measured
attribute levels) and scores them on `guidekit sweep prompts`' fixed evaluation prompts, per group (seen,
heldout-phrase, heldout-combo). The text-conditional UNet sees a prompt only through this embedding, so these
accuracies bound what guidance can do for held-out phrasings. Probes: nearest training caption (cosine), a linear
softmax classifier, a 2-layer MLP. `--extended` adds four more training paraphrases per class (synonyms listed
below), keeping the held-out ones held out.

Usage: python benchmarks/text_probe.py [--extended] [--n 6000] [--json PATH]   (needs the `text` extra)
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import torch.nn.functional as F

EXTRA = {0: [("a", "crew-neck top"), ("a", "tank top"), ("a", "cotton t-shirt"), ("a", "casual top")],
         1: [("", "slacks"), ("a", "pair of chinos"), ("", "leggings"), ("", "pants")],
         2: [("a", "knit sweater"), ("a", "sweatshirt"), ("a", "cardigan"), ("a", "woolly sweater")],
         3: [("an", "evening dress"), ("a", "maxi dress"), ("a", "cocktail dress"), ("a", "long dress")],
         4: [("a", "winter coat"), ("a", "raincoat"), ("a", "trench coat"), ("a", "blazer")],
         5: [("a", "strappy sandal"), ("a", "slide"), ("a", "gladiator sandal"), ("a", "beach sandal")],
         6: [("a", "dress shirt"), ("a", "flannel shirt"), ("a", "long-sleeved shirt"), ("a", "button-down")],
         7: [("an", "athletic shoe"), ("a", "sports shoe"), ("a", "canvas shoe"), ("a", "low-top sneaker")],
         8: [("a", "shoulder bag"), ("a", "satchel"), ("a", "clutch"), ("a", "shopping bag")],
         9: [("a", "chelsea boot"), ("a", "heeled boot"), ("a", "leather boot"), ("a", "winter boot")]}


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> torch.nn.Module:
    """Full-batch Adam on cross-entropy (embeddings scaled ×10: unit-norm inputs train slowly otherwise)."""
    opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x * 10), y).backward()
        opt.step()
    return model


def run(extended: bool, n: int) -> dict:
    from guidekit.text import captions as C
    from guidekit.text.encoder import TextEncoder

    if extended:
        C.CLASS_PHRASES = [p[:-1] + EXTRA[c] + p[-1:] for c, p in enumerate(C.CLASS_PHRASES)]
    rng = random.Random(0)
    levels = [{k: rng.choice(["low", "high", None]) for k in ("brightness", "size", "texture")} for _ in range(n)]
    caps = [C.caption(i % 10, lv, 0, i) for i, lv in enumerate(levels)]
    enc = TextEncoder().load()
    x, y = enc.encode(caps).float(), torch.tensor([i % 10 for i in range(n)])
    ev = C.eval_prompts()
    xe, ye = enc.encode([e["prompt"] for e in ev]).float(), torch.tensor([e["class"] for e in ev])
    torch.manual_seed(0)
    preds = {"nearest caption": y[(xe @ x.T).argmax(1)],
             "linear": fit(torch.nn.Linear(x.shape[1], 10), x, y)(xe * 10).argmax(1),
             "MLP (512 hidden)": fit(torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.SiLU(),
                                                          torch.nn.Linear(512, 10)), x, y)(xe * 10).argmax(1)}
    names = C.CLASS_PHRASES
    out = {"extended": extended, "train_captions": n, "unique": len(set(caps)), "probes": {}}
    for probe, p in preds.items():
        row = {g: (p == ye)[[i for i, e in enumerate(ev) if e["group"] == g]].float().mean().item() for g in C.GROUPS}
        wrong = [(names[int(ye[i])][-1][1], names[int(p[i])][0][1]) for i, e in enumerate(ev)
                 if e["group"] == "heldout-phrase" and p[i] != ye[i]]
        row["held-out paraphrases read as"] = [f"{a} → {b} ({wrong.count((a, b))}/2)" for a, b in sorted(set(wrong))]
        out["probes"][probe] = row
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extended", action="store_true", help="four more training paraphrases per class")
    ap.add_argument("--n", type=int, default=6000, help="training captions (class-balanced)")
    ap.add_argument("--json", help="also write the result as JSON")
    a = ap.parse_args(argv)
    r = run(a.extended, a.n)
    print(f"training paraphrases: {'7 per class (3 + 4 extra)' if a.extended else '3 per class'}; {r['unique']} unique "
          f"captions of {r['train_captions']}\n")
    print("| probe | seen | heldout-phrase | heldout-combo | wrong held-out prompts |\n| --- | --- | --- | --- | --- |")
    for name, row in r["probes"].items():
        print(f"| {name} | {row['seen']:.2f} | {row['heldout-phrase']:.2f} | {row['heldout-combo']:.2f} | "
              f"{'; '.join(row['held-out paraphrases read as'])} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=2)


if __name__ == "__main__":
    main()
