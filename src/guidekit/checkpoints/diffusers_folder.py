"""Pretrained diffusers UNet2DModel folders, loaded from local disk (never downloaded) as a LoadedModel.

Layouts: a UNet folder (config.json with "_class_name": "UNet2DModel" + diffusion_pytorch_model.safetensors), or a
pipeline folder (model_index.json, unet/, scheduler/scheduler_config.json). The noise schedule and prediction type
come from the scheduler config: scheduler_config.json in the UNet folder, scheduler/scheduler_config.json in the
pipeline folder, or ../scheduler/scheduler_config.json beside a unet/ folder passed directly. Without one guidekit
assumes DDPMScheduler's defaults (linear β 1e-4..0.02, T = 1000, epsilon) and warns. An optional guidekit.json (in
the folder passed, else the UNet folder) holds {"null_class_index": i, "class_names": [...]}. Weights are read only
from safetensors; pickled .bin weights are refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from guidekit.checkpoints.files import PICKLE_SUFFIXES, read_json
from guidekit.checkpoints.model import LoadedModel
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError, check

WEIGHTS = "diffusion_pytorch_model.safetensors"
OPTIONS = "guidekit.json"
OPTION_KEYS = ("null_class_index", "class_names")
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
DEFAULT_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
                     "beta_end": 0.02, "beta_schedule": "linear", "prediction_type": "epsilon"}


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether path is a diffusers pipeline folder or a diffusers model folder (config.json with _class_name)."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file():
        return True
    if not (p / "config.json").is_file():
        return False
    try:
        return "_class_name" in read_json(p / "config.json")
    except GuidekitError:
        return False


def unet_folder(path: Path) -> Path:
    """The folder holding the UNet2DModel's config.json and weights: path itself or path/unet."""
    folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
    check((folder / "config.json").is_file(), f"{path} looks like a diffusers pipeline but has no unet/config.json; "
                                              f"pass the folder written by UNet2DModel.save_pretrained or a "
                                              f"pipeline with a unet/ folder")
    name = read_json(folder / "config.json").get("_class_name")
    check(name == "UNet2DModel", f"{folder / 'config.json'} is a {name}, not a UNet2DModel; guidekit runs only "
                                 f"pixel-space diffusers UNet2DModels (no text or latent models)")
    if not ((folder / WEIGHTS).is_file() or (folder / f"{WEIGHTS}.index.json").is_file()):
        pickles = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
        check(not pickles, f"{folder} has only pickled weights ({', '.join(pickles)}); guidekit reads only "
                           f"safetensors because unpickling can run arbitrary code. Convert once where you trust "
                           f"the file: python -c \"from diffusers import UNet2DModel; m = UNet2DModel.from_pretrained"
                           f"('{folder}', use_safetensors=False); m.save_pretrained('{folder}', "
                           f"safe_serialization=True)\"")
        raise GuidekitError(f"{folder} has no {WEIGHTS}; save the model with UNet2DModel.save_pretrained")
    return folder


def scheduler_config(path: Path, unet_dir: Path) -> tuple[dict, str]:
    """(scheduler config, where it came from); DDPMScheduler's defaults, with a warning, when there is none."""
    for f in (unet_dir / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
              unet_dir.parent / "scheduler" / "scheduler_config.json"):
        if f.is_file():
            return read_json(f), str(f)
    warnings.warn(f"{path}: no scheduler config (scheduler_config.json beside the UNet's config.json, or a pipeline's "
                  f"scheduler/); assuming DDPMScheduler's defaults: linear β 1e-4..0.02, T = 1000, epsilon "
                  f"prediction. If the model was trained otherwise, save its scheduler there with "
                  f"scheduler.save_pretrained(...)", UserWarning, stacklevel=3)
    return dict(DEFAULT_SCHEDULER), "DDPMScheduler defaults"


def schedule_from_scheduler(config: dict, source: str = "scheduler config") -> tuple[NoiseSchedule, str]:
    """(NoiseSchedule, guidekit prediction type) from a diffusers scheduler config (DDPM, DDIM, PNDM, ...)."""
    name = config.get("_class_name", "scheduler")
    check("beta_schedule" in config, f"{source}: {name} has no beta_schedule, so it is not a DDPM-type (β) "
                                     f"scheduler; guidekit needs linear, scaled_linear or squaredcos_cap_v2 betas")
    check(config.get("trained_betas") is None, f"{source}: trained_betas (explicit betas) is not supported; use a "
                                               f"named beta_schedule")
    check(not config.get("rescale_betas_zero_snr"), f"{source}: rescale_betas_zero_snr=true (ᾱ_T = 0) is not "
                                                    f"supported: guidekit's ε form needs ᾱ_T > 0")
    T = config.get("num_train_timesteps", 1000)
    start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
    check(isinstance(T, int) and not isinstance(T, bool) and T >= 2,
          f"{source}: num_train_timesteps must be an integer >= 2, got {T!r}")
    check(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)),
          f"{source}: beta_start and beta_end must be numbers, got {start!r} and {end!r}")
    kind = config["beta_schedule"]
    if kind == "linear":
        schedule = NoiseSchedule.linear(T, start, end)
    elif kind == "scaled_linear":
        schedule = NoiseSchedule.scaled_linear(T, start, end)
    elif kind == "squaredcos_cap_v2":
        schedule = NoiseSchedule.cosine(T)
    else:
        raise GuidekitError(f"{source}: beta_schedule {kind!r} is not supported; guidekit knows linear, "
                            f"scaled_linear and squaredcos_cap_v2")
    pred = config.get("prediction_type", "epsilon")
    check(pred in PREDICTIONS, f"{source}: prediction_type {pred!r} is not supported; use one of "
                               f"{', '.join(PREDICTIONS)}")
    return schedule, PREDICTIONS[pred]


def read_options(path: Path, unet_dir: Path) -> dict:
    """guidekit.json from the folder passed, else the UNet folder; {} when there is none."""
    for f in dict.fromkeys((path / OPTIONS, unet_dir / OPTIONS)):
        if f.is_file():
            options = read_json(f)
            unknown = sorted(set(options) - set(OPTION_KEYS))
            check(not unknown, f"{f}: unknown key(s) {unknown}; guidekit.json may hold {list(OPTION_KEYS)}")
            return options
    return {}


def load_diffusers_model(path: str | Path, device: torch.device | str = "cpu",
                         null_class_index: int | None = None) -> LoadedModel:
    """Load a local diffusers UNet2DModel (UNet or pipeline folder) as a LoadedModel, in eval mode on device.

    null_class_index (else guidekit.json's) names the class-embedding row that is the null class ∅ (CFG);
    without one a class-conditional model's rows are all classes and CFG is refused.
    """
    from guidekit.models.diffusers_unet import DiffusersUNet, import_diffusers

    path = Path(path)
    unet_dir = unet_folder(path)
    config, source = scheduler_config(path, unet_dir)
    schedule, prediction = schedule_from_scheduler(config, source)
    options = read_options(path, unet_dir)
    if null_class_index is None:
        null_class_index = options.get("null_class_index")
    diffusers = import_diffusers()
    try:
        unet2d = diffusers.UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise GuidekitError(f"cannot load the UNet2DModel in {unet_dir}: {e}") from e
    net = DiffusersUNet(unet2d.float(), schedule.num_timesteps, prediction, null_class_index)
    K = net.config.num_classes
    names = options.get("class_names")
    check(names is None or (isinstance(names, list) and len(names) == K and all(isinstance(n, str) for n in names)),
          f"guidekit.json class_names must list the model's {K} class names (null row excluded), got {names!r}")
    if names is None and K:
        names = [str(i) for i in range(K)]
    return LoadedModel(net.to(device).eval(), schedule, names or None, path)
