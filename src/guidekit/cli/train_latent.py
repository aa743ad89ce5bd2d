"""`guidekit train --latent`: a latent text-to-image model trained here (Rombach et al. 2022) in two stages, the
autoencoder (OUT/vae, unless --vae names one) and then the text-conditioned latent UNet (OUT), exported as a
diffusers StableDiffusionPipeline folder (OUT/model)."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import nonneg_float, positive_float, positive_int
from guidekit.errors import check

#: The autoencoder stage's defaults (--vae-steps, --vae-batch-size, --vae-lr, --kl-weight).
VAE_DEFAULTS = {"steps": 1500, "batch_size": 64, "lr": 5e-4, "kl_weight": 1e-4}


def add_latent_args(p) -> None:
    g = p.add_argument_group("latent model (--latent)")
    g.add_argument("--latent", action="store_true",
                   help="train a latent text-to-image model (implies --captions): an autoencoder (32² → 8²×4 "
                        "latents) in OUT/vae, then a UNet2DConditionModel cross-attending to the frozen "
                        "all-MiniLM-L6-v2's token embeddings; OUT/model is a StableDiffusionPipeline folder that "
                        "diffusers and every guidekit command load. --preset tiny|small sizes both parts")
    g.add_argument("--vae", metavar="FOLDER", help="--latent: use this trained AutoencoderKL folder instead of "
                                                  "training one (e.g. another run's OUT/vae/model)")
    g.add_argument("--vae-steps", type=positive_int("--vae-steps"), default=None,
                   help=f"--latent: autoencoder steps (default {VAE_DEFAULTS['steps']})")
    g.add_argument("--vae-batch-size", type=positive_int("--vae-batch-size"), default=None,
                   help=f"--latent: autoencoder batch (default {VAE_DEFAULTS['batch_size']})")
    g.add_argument("--vae-lr", type=positive_float("--vae-lr"), default=None,
                   help=f"--latent: autoencoder learning rate (default {VAE_DEFAULTS['lr']})")
    g.add_argument("--kl-weight", type=nonneg_float("--kl-weight"), default=None,
                   help=f"--latent: weight of the KL term per pixel (default {VAE_DEFAULTS['kl_weight']})")


def run_latent(args, opt: dict, train_config) -> None:
    """Both stages; each continues from its own checkpoints (--resume) and skips itself once done."""
    from guidekit.checkpoints.runs import complete_checkpoints
    from guidekit.cli.common import fit
    from guidekit.data import load_dataset
    from guidekit.diffusion import NoiseSchedule
    from guidekit.models.latent_parts import PRESETS, unet_config, vae_config
    from guidekit.text.encoder import model_dir
    from guidekit.text.table import build_table
    from guidekit.training.config import TrainConfig
    from guidekit.training.latent_trainer import LatentTrainer, TokenEncoder
    from guidekit.training.vae_trainer import VAETrainer

    check(not args.unconditional, "--latent trains a text-to-image model; drop --unconditional")
    check(opt["preset"] in PRESETS, f"--latent has the presets {', '.join(PRESETS)}; got --preset {opt['preset']}")
    out = Path(args.out)
    check(args.resume or not (out.exists() and any(out.iterdir())),
          f"{out} is not empty; a new --latent run needs a new or empty --out, or pass --resume to continue it")
    dataset = load_dataset(opt["dataset"], split=opt["split"], data_dir=args.data, resolution=32, channels=1)
    vae_dir = Path(args.vae) if args.vae else out / "vae" / "model"
    if not args.vae:
        steps = args.vae_steps or VAE_DEFAULTS["steps"]
        vae_cfg = TrainConfig(steps=steps, batch_size=args.vae_batch_size or VAE_DEFAULTS["batch_size"],
                              lr=args.vae_lr or VAE_DEFAULTS["lr"], warmup=min(200, steps // 5), ema_decay=0.999,
                              save_every=max(1, steps // 3), log_every=50, keep=1, seed=train_config.seed)
        run = out / "vae"
        vt = VAETrainer(vae_config(opt["preset"], dataset.channels, dataset.resolution), dataset, vae_cfg, run,
                        resume=bool(complete_checkpoints(run)), mixed_precision=args.mixed_precision,
                        kl_weight=VAE_DEFAULTS["kl_weight"] if args.kl_weight is None else args.kl_weight)
        if vt.step < vae_cfg.steps:
            print(f"stage 1 of 2: the autoencoder, {vae_cfg.steps} steps of {vae_cfg.batch_size} images, into {run}")
            vt.fit(progress=not args.no_progress)
        print(f"autoencoder: {vae_dir} (step {vt.step})")
        del vt
    text = build_table(dataset, opt["captions_per_image"], train_config.seed, embed=False)
    encoder = TokenEncoder(model_dir())
    print(f"captions: {len(text.captions)} unique over {len(dataset)} images × {opt['captions_per_image']}, as "
          f"token embeddings of the frozen {text.meta['encoder']}")
    from guidekit.checkpoints.latent_folder import load_vae

    space = load_vae(vae_dir)
    size = dataset.resolution // space.factor
    schedule = (NoiseSchedule.linear if opt["schedule"] == "linear" else NoiseSchedule.cosine)(opt["timesteps"])
    trainer = LatentTrainer(unet_config(opt["preset"], size, space.channels, encoder.dim), vae_dir, dataset, text,
                            encoder, schedule, opt["prediction"], train_config, out,
                            resume=bool(complete_checkpoints(out)), mixed_precision=args.mixed_precision,
                            progress=not args.no_progress)
    print(f"stage 2 of 2: the latent UNet on {size}×{size}×{space.channels} latents, {train_config.steps} steps")
    model = fit(trainer, args)
    print(f"trained to step {trainer.step}: pipeline folder at {model}, log at {out / 'log.csv'}")
