"""How much of a latent model's image quality its autoencoder allows: reconstruct the Fashion-MNIST test images
through the VAE (x → E(x) → D(z), the posterior mean) and score the reconstructions like samples (RMSE, PSNR,
FID/KID-FMNIST against the test set, the evaluator's accuracy on them). The FID here is the floor under any
latent sample set of that model at n images (Rombach et al. 2022 report the same for their autoencoders).

  python benchmarks/vae_reconstruction.py runs/fmnist-latent --n 2000
"""

from __future__ import annotations

import argparse
import math

import torch

from guidekit.checkpoints import load_model
from guidekit.data import load_dataset
from guidekit.metrics.evaluate import evaluate
from guidekit.metrics.network import load_network, network_id
from guidekit.metrics.reference import reference


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a latent model: pipeline folder or guidekit train --latent run")
    p.add_argument("--n", type=int, default=2000, help="test images reconstructed (the first n)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (its test split) or samples")
    p.add_argument("--data", default=None, help="folder with the IDX files (default: the usual places)")
    return p.parse_args(argv)


def latent_model_and_data(a: argparse.Namespace):
    """(the latent model a.model, a.dataset's test split at its pixel size; the embedded samples' one split)."""
    model = load_model(a.model)
    if model.latent is None:
        raise SystemExit(f"{a.model} is not a latent model (it has no VAE)")
    split = "train" if a.dataset == "samples" else "test"
    return model, load_dataset(a.dataset, split=split, data_dir=a.data, resolution=model.image_size,
                               channels=model.image_channels)


@torch.no_grad()
def run(a: argparse.Namespace) -> dict:
    model, data = latent_model_and_data(a)
    n = min(a.n, len(data))
    x = data.images(slice(0, n))
    recon = torch.cat([model.latent.decode(model.latent.encode(x[i:i + 256])) for i in range(0, n, 256)])
    mse = float((recon - x).pow(2).mean())
    evaluator = load_network()
    ref = reference(evaluator, data, network_id(evaluator))
    row = evaluate(recon, data.labels[:n] if data.labels is not None else None, evaluator, ref)
    real = evaluate(x, data.labels[:n] if data.labels is not None else None, evaluator, ref)
    return {"n": n, "rmse": math.sqrt(mse), "psnr": 10 * math.log10(4 / mse), "fid": row["fid"],
            "kid": row["kid"], "accuracy": row["accuracy"], "fid_real_subset": real["fid"],
            "accuracy_real": real["accuracy"]}


def main(argv=None) -> dict:
    r = run(parse_args(argv))
    print("| n | RMSE ([−1, 1]) | PSNR dB | FID-FMNIST of reconstructions | of the originals (same n) | KID | "
          "accuracy: reconstructions | originals |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {r['n']} | {r['rmse']:.4f} | {r['psnr']:.2f} | {r['fid']:.3f} | {r['fid_real_subset']:.3f} | "
          f"{r['kid']:.4f} | {r['accuracy']:.3f} | {r['accuracy_real']:.3f} |")
    return r


if __name__ == "__main__":
    main()
