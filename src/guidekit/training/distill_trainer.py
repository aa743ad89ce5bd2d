"""`guidekit distill`: guidance distillation, stage one (Meng et al. 2023, "On Distillation of Guided Diffusion
Models"): a w-conditioned student gives the teacher's CFG output (1+w)·ε(x, c) − w·ε(x, ∅) in one pass.

The student is the teacher's UNet with `guidance_embed=True`, its weights the teacher's and its new w-embedding's last
layer zero, so it starts as the teacher's conditional model at every w. Each step draws real images x0 with their
labels (a p_uncond fraction set to ∅), t uniform, x_t = q_sample(x0, ᾱ_t, ε) and w ~ U(w_min, w_max) per image;
the target is the frozen teacher's CFG combination, both halves in one batched forward (fp32, no grad).

Loss space: the teacher's own prediction space (ε, v or x0). Each of to_eps's conversions is affine in the network
output with x_t fixed, and CFG's weights (1+w, −w) sum to 1, so CFG of the raw outputs *is* the raw form of CFG of
the ε's: the student matches the teacher's guided ε exactly where it matches this target, and the loss weights noise
levels as the teacher's own training did (v for fmnist-cfg).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from guidekit.checkpoints.controlnet import fingerprint
from guidekit.checkpoints.model import LoadedModel, model_files
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample
from guidekit.errors import check
from guidekit.models.unet import UNet
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.batch import DeviceImages, draw_noise, to_device
from guidekit.training.config import DistillConfig

METHOD = "Meng et al. 2023 stage one"


def check_teacher(teacher: LoadedModel, name: str) -> None:
    """Refuse a teacher guidance distillation cannot use, naming why: not a guidekit pixel UNet, nothing to guide,
    already distilled, or text-conditioned (not supported yet)."""
    check(isinstance(teacher.net, UNet) and teacher.latent is None,
          f"{name} is not a guidekit UNet ({type(teacher.net).__name__}{', a latent model' if teacher.latent else ''})"
          f": guidekit distill supports only guidekit UNet models (guidekit train) for now")
    c = teacher.net.config
    check(not c.guidance_embed and teacher.w_range is None,
          f"{name} is itself a guidance-distilled student (w range {teacher.w_range}): distill its teacher instead")
    check(c.num_classes > 0 or c.text_dim > 0,
          f"{name} is unconditional (no classes, no text): classifier-free guidance has nothing to guide, so there "
          f"is nothing to distill; use a class-conditional model such as fmnist-cfg")
    check(c.text_dim == 0, f"{name} is text-conditioned: guidekit distill supports class-conditional teachers only "
                           f"for now")


def student_from(teacher: UNet) -> UNet:
    """The teacher's UNet with guidance_embed=True, holding the teacher's weights (the w-embedding is new, zero last)."""
    student = UNet(dataclasses.replace(teacher.config, guidance_embed=True)).to(next(teacher.parameters()).device)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    check(not unexpected and all(k.startswith("guidance_embed.") for k in missing),
          f"the student does not hold the teacher's weights (missing {missing}, unexpected {unexpected}); this is a "
          f"bug in guidekit, please report it")
    return student


class DistillTrainer(BaseTrainer):
    """Trains a w-conditioned student of a frozen CFG teacher; writes checkpoints/, log.csv and model/ under out_dir."""

    desc = "distill"

    def __init__(self, teacher: LoadedModel, teacher_name: str, dataset: ImageDataset, config: DistillConfig,
                 out_dir: str | Path, resume: bool = False, mixed_precision: str = "auto"):
        """teacher_name: what config.json records as the teacher (a zoo name or the teacher folder's path)."""
        config.validate()
        check_teacher(teacher, teacher_name)
        c = teacher.net.config
        check(len(dataset) > 0, f"dataset {dataset.name} is empty; point --data at a folder with images")
        check(dataset.labels is not None and dataset.num_classes == c.num_classes,
              f"the teacher has {c.num_classes} classes, dataset {dataset.name} "
              f"{dataset.num_classes if dataset.labels is not None else 'no labels'}; distill on the teacher's data")
        check(c.in_channels == dataset.channels and c.image_size == dataset.resolution,
              f"the teacher expects {c.in_channels}×{c.image_size}² images, dataset {dataset.name} has "
              f"{dataset.channels}×{dataset.resolution}²")
        check(teacher.schedule.num_timesteps == c.num_train_timesteps, f"the teacher's schedule has "
              f"{teacher.schedule.num_timesteps} timesteps, its UNet {c.num_train_timesteps}: the folder is damaged")
        self.teacher_model, self.teacher_name, self.dataset = teacher, str(teacher_name), dataset
        self.schedule = teacher.schedule
        self.teacher_fingerprint = fingerprint(teacher.net)
        super().__init__(config, out_dir, resume, mixed_precision)
        self.teacher = teacher.net.to(self.acc.device).eval().requires_grad_(False)
        self.on_device = DeviceImages(dataset, self.acc.device)

    def build(self) -> UNet:
        return student_from(self.teacher_model.net)

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """(x_t, t, y with the null index on ∅ rows, w) of step's (shard of the) batch, on the device."""
        g, device, n_cls = _step_generator(self.cfg.seed, step), self.acc.device, self.teacher_model.net.config.num_classes
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        t = torch.randint(self.schedule.num_timesteps, (len(idx),), generator=g)
        eps = draw_noise((len(idx), *self.dataset.pixels.shape[1:]), g, self.cfg.seed, step, device)
        drop = torch.rand(len(idx), generator=g) < self.cfg.p_uncond
        w = self.cfg.w_min + (self.cfg.w_max - self.cfg.w_min) * torch.rand(len(idx), generator=g)
        shard = lambda v: v.chunk(self.acc.num_processes)[self.acc.process_index]  # noqa: E731
        idx, t, eps, drop, w = shard(idx), shard(t), shard(eps), shard(drop), shard(w)
        ab = to_device(self.schedule.alpha_bar(t).float(), device)
        x_t = q_sample(self.on_device.images(idx), ab, eps)
        y = to_device(torch.where(drop, n_cls, self.dataset.labels[idx]), device)
        return x_t, to_device(t, device), y, to_device(w, device)

    @torch.no_grad()
    def target(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The teacher's CFG output (1+w)·out(x, y) − w·out(x, ∅) in its prediction space, both halves in one forward
        (on ∅ rows both halves are ε(x, ∅), so the target is the unconditional output)."""
        null = torch.full_like(y, self.teacher.config.num_classes)
        out = self.teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), y=torch.cat([y, null])).float()
        cond, uncond = out.chunk(2)
        return cond + w.float()[:, None, None, None] * (cond - uncond)

    def loss_on(self, step: int) -> torch.Tensor:
        """MSE between the student's output at (x_t, t, y, w) and the teacher's CFG target."""
        x_t, t, y, w = self.batch(step)
        goal = self.target(x_t, t, y, w)
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)  # dropout layers
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return F.mse_loss(self.net(x_t, t, y=y, w=w).float(), goal)

    def distilled(self) -> dict:
        """config.json's "distilled" section (read back as LoadedModel.distilled / w_range)."""
        return {"teacher": self.teacher_name, "teacher_fingerprint": self.teacher_fingerprint,
                "w_range": [self.cfg.w_min, self.cfg.w_max], "method": METHOD}

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        files = model_files(self.raw, self.schedule, self.teacher_model.class_names, weights)
        files["config.json"]["distilled"] = self.distilled()
        return files

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        saved = config.get("distilled") or {}
        check(saved.get("teacher_fingerprint") == self.teacher_fingerprint,
              f"--resume: {ckpt} distilled another teacher ({saved.get('teacher')}); pass the same MODEL or a new "
              f"--out")
        check(saved.get("w_range") == [self.cfg.w_min, self.cfg.w_max],
              f"--resume: {ckpt} was distilled with --w-range {saved.get('w_range')}, not "
              f"{[self.cfg.w_min, self.cfg.w_max]}; drop --w-range or use a new --out")
        check(config.get("unet") == self.raw.config.to_dict(), f"--resume: {ckpt} holds another student config "
                                                               f"({config.get('unet')}); use a new --out")
