"""Copy trained runs into the package's model zoo as fp16 safetensors (ControlNets re-tied to the fp16 base)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from guidekit.checkpoints import fingerprint, load_model, resolve_model_dir

ZOO = Path(__file__).resolve().parents[1] / "src" / "guidekit" / "zoo" / "weights"


def copy_half(src: Path, dst: Path, config: dict) -> None:
    """config.json as given + model.safetensors with floating tensors in fp16."""
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous()
               for k, v in load_file(src / "model.safetensors").items()}
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", required=True, help="model run of guidekit train")
    p.add_argument("--base-name", default="fmnist-cfg")
    p.add_argument("--classifier", action="append", default=[], metavar="NAME=RUN")
    p.add_argument("--controlnet", action="append", default=[], metavar="NAME=RUN")
    args = p.parse_args()
    base_dir = resolve_model_dir(args.base)
    copy_half(base_dir, ZOO / args.base_name, json.loads((base_dir / "config.json").read_text()))
    base = load_model(ZOO / args.base_name).net  # fp16-rounded weights, as users will load them
    for item in args.classifier:
        name, run = item.split("=", 1)
        src = resolve_model_dir(run)
        copy_half(src, ZOO / name, json.loads((src / "config.json").read_text()))
    for item in args.controlnet:
        name, run = item.split("=", 1)
        src = resolve_model_dir(run, export="controlnet")
        config = json.loads((src / "config.json").read_text())
        config["base"] = fingerprint(base)
        copy_half(src, ZOO / name, config)
    for d in sorted(ZOO.iterdir()):
        print(f"{d.name}: {sum(f.stat().st_size for f in d.iterdir()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
