"""Train the Fashion-MNIST evaluator with the default recipe and save it (used for the shipped weights).

    python scripts/train_evaluator.py --out src/guidekit/metrics/weights/fmnist-evaluator --machine "2-core CPU VM"
"""

import argparse
import os
import shlex
import sys
import time

import torch

from guidekit.checkpoints import save_evaluator
from guidekit.data import load_dataset
from guidekit.io import check_output
from guidekit.metrics.evaluator import train_evaluator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (replaced atomically when training succeeds)")
    p.add_argument("--epochs", type=int, default=None, help="training budget in epochs (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest beside another job)")
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files (default: system install)")
    p.add_argument("--machine", default=f"{os.cpu_count()}-core CPU", help="machine description for config.json")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    check_output(args.out, overwrite=True)
    start = time.time()
    train = load_dataset("fashion-mnist", split="train", data_dir=args.data)
    test = load_dataset("fashion-mnist", split="test", data_dir=args.data)
    kwargs = {"epochs": args.epochs} if args.epochs else {}
    model, metrics = train_evaluator(train, test, seed=args.seed, threads=args.threads,
                                     progress=not args.no_progress, **kwargs)
    wall = time.time() - start
    info = {"machine": args.machine, "torch": torch.__version__, "wall_seconds": round(wall, 1),
            "command": shlex.join(["python", "scripts/train_evaluator.py", *sys.argv[1:]])}
    save_evaluator(model, args.out, metrics, info=info)
    print(f"test accuracy {metrics['test_accuracy']:.4f} (float16 weights: {metrics['test_accuracy_fp16']:.4f}), "
          f"training {metrics['train_seconds']:.0f} s, wall {wall:.0f} s; saved to {args.out}")


if __name__ == "__main__":
    main()
