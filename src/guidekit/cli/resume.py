"""`--resume` continues what a run recorded: its data and model options come from the checkpoint, and an option
given again that says otherwise is refused by name."""

from __future__ import annotations

from pathlib import Path

from guidekit.data.dataset import SPLITS
from guidekit.errors import check, shown

#: The UNetConfig fields the training commands set themselves; every other field is the preset's.
CLI_FIELDS = ("image_size", "in_channels", "out_channels", "num_classes", "text_dim", "num_train_timesteps",
              "prediction_type", "dropout")


def saved_run(out: str) -> dict:
    """The newest checkpoint's config.json and state.json, for --resume."""
    from guidekit.checkpoints import newest_checkpoint, read_json

    ckpt = newest_checkpoint(out)
    return {"config": read_json(ckpt / "config.json"), "state": read_json(ckpt / "state.json")}


def recorded_source(state: dict) -> dict:
    """{"dataset", "split", "data"} a run was trained on (runs from before sources were recorded: read from the
    dataset's name; a folder then has dataset None)."""
    recorded = state.get("dataset") if isinstance(state.get("dataset"), dict) else {}
    source = recorded.get("source")
    if isinstance(source, dict) and source.get("dataset"):
        return {"dataset": source["dataset"], "split": source.get("split"), "data": source.get("data")}
    name = str(recorded.get("name", ""))
    if name == "samples":
        return {"dataset": "samples", "split": None, "data": None}
    for spec in ("fashion-mnist", "mnist"):
        for split in SPLITS:
            if name == f"{spec}-{split}":
                return {"dataset": spec, "split": split, "data": None}
    return {"dataset": None, "split": None, "data": None}


def _same(flag: str, given, recorded) -> bool:
    """Whether an option given now says what the run recorded (dataset folders compared as resolved paths)."""
    if flag == "--dataset" and given not in ("fashion-mnist", "mnist", "samples"):
        return Path(str(given)).expanduser().resolve() == Path(str(recorded)).expanduser().resolve()
    return given == recorded


def keep_recorded(out: str, given: dict[str, object], recorded: dict[str, object]) -> dict[str, object]:
    """recorded's value for each option (given's where nothing was recorded), refusing a given value (not None)
    that contradicts the record."""
    kept = {}
    for flag, value in given.items():
        theirs = recorded.get(flag)
        check(value is None or theirs is None or _same(flag, value, theirs),
              f"--resume: {shown(out)} was trained with {flag} {shown(theirs)}, not {shown(value)}; drop {flag} "
              f"(--resume continues what the run recorded) or start a new run in another --out")
        kept[flag] = value if theirs is None else theirs
    return kept


def data_source(out: str, args, state: dict) -> dict:
    """The dataset spec, split and IDX folder a resumed run reads: the recorded ones; --dataset/--split given again
    must agree; --data may point elsewhere (the trainer checks the data's fingerprint)."""
    source = recorded_source(state)
    check(source["dataset"] is not None or args.dataset is not None,
          f"--resume: {shown(out)} does not record which image folder it was trained on (an older run); pass the "
          f"same --dataset FOLDER again")
    from guidekit.data.idx import wants_samples

    given = "samples" if args.dataset in (None, "fashion-mnist") and wants_samples(args.data) else args.dataset
    kept = keep_recorded(out, {"--dataset": given, "--split": getattr(args, "split", None)},
                         {"--dataset": source["dataset"], "--split": source["split"]})
    data = args.data
    if data is None and source["data"] is not None and Path(source["data"]).is_dir():
        data = source["data"]
    return {"dataset": kept["--dataset"], "split": kept["--split"] or "train", "data": data}


def preset_of(config) -> str | None:
    """The UNet preset a config was built from (its other fields as the commands set them), or None."""
    import dataclasses

    from guidekit.models.unet import PRESETS, UNetConfig

    own = {k: getattr(config, k) for k in CLI_FIELDS if hasattr(config, k)}
    for name in PRESETS:
        if dataclasses.replace(UNetConfig.preset(name, **own)).to_dict() == config.to_dict():
            return name
    return None
