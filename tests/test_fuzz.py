"""Property-based fuzzing (hypothesis): validators, loaders, config parsers and the CLI parser either give a valid
result or a GuidekitError (exit code 2 on the command line) — never another exception or a traceback."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from guidekit.errors import GuidekitError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
SMALL = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

NUMBERS = st.one_of(st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=4), max_leaves=8)
NUMBER_TEXT = st.one_of(st.sampled_from(["0", "1", "-1", "0.5", "1e309", "-0", "nan", "inf", "-inf", "1e3", "",
                                         " 2", "0x10", "１", "1_000"]),
                        NUMBERS.map(str), st.text(max_size=6))


def _ok_or_guidekit(fn, *args, **kwargs):
    """Call fn; a GuidekitError is fine, any other exception fails the property."""
    try:
        return fn(*args, **kwargs)
    except GuidekitError:
        return None


@pytest.fixture(scope="module")
def schedule():
    """The linear T = 1000 schedule of the zoo models."""
    from guidekit.diffusion.schedule import NoiseSchedule

    return NoiseSchedule.linear(1000)


# ---- validators ------------------------------------------------------------------------------------------------

VALUES = st.sampled_from([0.0, 1.0, 0.5, -1.0, 2.0, float("nan"), float("inf")])


@st.composite
def masks(draw):
    """A random mask-like tensor (shape, dtype and values drawn) and the images it is checked against."""
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.uint8, torch.float16]))
    values = draw(st.lists(VALUES, min_size=1, max_size=4))
    n = int(np.prod(shape))
    flat = torch.tensor([values[i % len(values)] for i in range(n)], dtype=torch.float64)
    if dtype in (torch.int64, torch.uint8, torch.bool):
        flat = torch.nan_to_num(flat, nan=0.0, posinf=1.0).clamp(0, 1)
    images = torch.zeros(draw(st.integers(1, 3)), draw(st.sampled_from([1, 3])), draw(st.integers(1, 5)),
                         draw(st.integers(1, 5)), dtype=draw(st.sampled_from([torch.float32, torch.int64])))
    return flat.to(dtype).reshape(shape), images


@FUZZ
@given(masks())
def test_check_mask(case):
    """check_mask returns a 0/1 float mask of the images' size, or refuses."""
    from guidekit.masks import check_mask

    mask, images = case
    out = _ok_or_guidekit(check_mask, mask, images)
    if out is not None:
        assert out.shape[-2:] == images.shape[-2:] and bool(((out == 0) | (out == 1)).all())
        assert not bool((out == 1).flatten(1).all(1).any()) and bool((out == 1).flatten(1).any(1).all())


@FUZZ
@given(SCALARS)
def test_weights_and_t0(value):
    """w, the classifier weight, the guidance scale and t0 are finite numbers in range, or refused."""
    from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance, guidance_scale_to_w
    from guidekit.sampling.sdedit import check_t0

    cfg = _ok_or_guidekit(ClassifierFreeGuidance, lambda x, t, c: x, value)
    assert cfg is None or (np.isfinite(cfg.w) and cfg.w >= 0)
    cg = _ok_or_guidekit(ClassifierGuidance, lambda x, t, c: x, torch.nn.Identity(), None, value)
    assert cg is None or (np.isfinite(cg.w) and cg.w >= 0)
    t0 = _ok_or_guidekit(check_t0, value)
    assert t0 is None or 0 < t0 <= 1
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        w = _ok_or_guidekit(guidance_scale_to_w, value)
        assert w is None or (np.isfinite(w) and w >= 0)


@FUZZ
@given(NUMBER_TEXT)
def test_cli_number_types(text):
    """The argparse types accept a finite number in range or raise ArgumentTypeError."""
    from guidekit.cli.common import nonneg_float, nonneg_int, positive_float, positive_int
    from guidekit.cli.control import number_list
    from guidekit.cli.edit import t0_value

    for parse in (positive_int("--n"), nonneg_int("--seed"), nonneg_float("--w"), positive_float("--max-minutes"),
                  t0_value, number_list("--control-scale")):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            continue
        values = value if isinstance(value, list) else [value]
        assert values and all(np.isfinite(v) for v in values)


@FUZZ
@given(st.one_of(st.integers(-5, 3000), st.floats(-5, 3000), st.booleans(), st.none(), st.text(max_size=4)),
       st.one_of(st.sampled_from(["trailing", "leading", "linspace"]), st.text(max_size=8)),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 2000)))
def test_schedule_helpers(schedule, steps, spacing, t):
    """timesteps, sdedit_levels, alpha_bar and t_from_fraction: valid descending levels, or refused."""
    from guidekit.sampling.sdedit import sdedit_levels

    levels = _ok_or_guidekit(schedule.timesteps, steps, spacing)
    if levels is not None:
        assert len(levels) == steps + 1 and levels[-1] == -1.0
        assert all(a > b for a, b in zip(levels, levels[1:]))
    for t0 in (t, 0.5):
        lv = _ok_or_guidekit(sdedit_levels, schedule, t0, steps, spacing)
        assert lv is None or (lv[-1] == -1.0 and len(lv) == steps + 1)
    ab = _ok_or_guidekit(schedule.alpha_bar, t)
    assert ab is None or 0 < float(ab) <= 1
    x = _ok_or_guidekit(schedule.t_from_fraction, t)
    assert x is None or -1 <= x <= 999


@FUZZ
@given(st.integers(-2, 12), st.integers(-2, 12), st.integers(-2, 12))
def test_repaint_levels(schedule, steps, jump_length, jump_n_sample):
    """repaint_levels: a trajectory with the closed-form NFE, or refused."""
    from guidekit.sampling.repaint import count_nfe, expected_nfe, repaint_levels

    ts = _ok_or_guidekit(schedule.timesteps, steps)
    if ts is None:
        return
    levels = _ok_or_guidekit(repaint_levels, ts, jump_length, jump_n_sample)
    if levels is not None:
        assert levels[-1] == -1.0 and count_nfe(levels) == expected_nfe(steps, jump_length, jump_n_sample)


UNET_KEYS = ["image_size", "in_channels", "out_channels", "channels", "channel_mult", "num_res_blocks",
             "attention_resolutions", "num_heads", "head_dim", "norm_groups", "dropout", "num_classes",
             "num_train_timesteps", "prediction_type"]


@st.composite
def unet_dicts(draw):
    """A UNetConfig dict with some fields replaced by random JSON values, some dropped, some added."""
    from guidekit.models.unet import UNetConfig

    d = UNetConfig().to_dict()
    for k in draw(st.lists(st.sampled_from(UNET_KEYS), max_size=3)):
        d[k] = draw(JSON)
    for k in draw(st.lists(st.sampled_from(UNET_KEYS), max_size=1)):
        d.pop(k, None)
    d.update(draw(st.dictionaries(st.text(max_size=5), JSON, max_size=1)))
    return d


@FUZZ
@given(unet_dicts(), st.dictionaries(st.sampled_from(["kind", "num_timesteps", "beta_start", "beta_end", "s",
                                                      "max_beta", "other"]),
                                     st.one_of(JSON, st.sampled_from(["linear", "cosine", "scaled_linear"])),
                                     max_size=4))
def test_config_from_dict(unet, sched):
    """UNetConfig.from_dict / ControlNetConfig.from_dict / NoiseSchedule.from_config: a config, or refused."""
    from guidekit.diffusion.schedule import NoiseSchedule
    from guidekit.models.controlnet import ControlNetConfig
    from guidekit.models.unet import UNetConfig

    cfg = _ok_or_guidekit(UNetConfig.from_dict, unet)
    assert cfg is None or cfg.to_dict() == UNetConfig.from_dict(cfg.to_dict()).to_dict()
    _ok_or_guidekit(ControlNetConfig.from_dict, {"unet": unet, "hint_channels": unet.get("in_channels"),
                                                 "hint_widths": unet.get("channel_mult"), "base_kind": "guidekit"})
    _ok_or_guidekit(UNetConfig.from_dict, sched)
    s = _ok_or_guidekit(NoiseSchedule.from_config, sched)
    assert s is None or bool(((s.betas > 0) & (s.betas < 1)).all())


# ---- loaders fed random bytes --------------------------------------------------------------------------------

def _png_bytes(seed: int) -> bytes:
    """A valid small PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (9, 7), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@st.composite
def broken_bytes(draw, valid: bytes):
    """Random bytes, or a valid file cut short, with a few bytes overwritten, or with junk appended."""
    kind = draw(st.sampled_from(["random", "cut", "flip", "append", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "cut":
        return valid[:draw(st.integers(0, len(valid)))]
    if kind == "append":
        return valid + draw(st.binary(min_size=1, max_size=20))
    if kind == "header":
        return valid[:16] + draw(st.binary(max_size=100))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@SMALL
@given(broken_bytes(_png_bytes(0)))
def test_image_loaders_on_broken_files(data):
    """Condition images, guides, masks, inpaint images and folder datasets: an image or a GuidekitError."""
    from guidekit.cli.inpaint import load_image
    from guidekit.conditions import load_condition_image
    from guidekit.data.folder import load_folder
    from guidekit.guides import load_guide
    from guidekit.masks import load_mask

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        for load in (load_condition_image, load_guide, load_mask, lambda p: load_image(str(p), 32, 1),
                     lambda p: load_folder(p.parent)):
            out = _ok_or_guidekit(load, path)
            if isinstance(out, torch.Tensor):
                assert bool(torch.isfinite(out).all())


def _idx_bytes() -> bytes:
    """A gzipped IDX file of 3 4x4 uint8 images."""
    header = bytes([0, 0, 8, 3]) + np.array([3, 4, 4], dtype=">u4").tobytes()
    return gzip.compress(header + bytes(range(48)), mtime=0)


@SMALL
@given(st.one_of(broken_bytes(_idx_bytes()), broken_bytes(gzip.decompress(_idx_bytes()))))
def test_read_idx_on_broken_files(data):
    """read_idx: an array whose size matches its header, or a GuidekitError naming the file."""
    from guidekit.data import read_idx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images-idx3-ubyte"
        path.write_bytes(data)
        try:
            a = read_idx(path)
        except GuidekitError as e:
            assert str(path) in str(e)
            return
        assert a.ndim >= 1


@pytest.fixture(scope="module")
def zoo_files():
    """The bytes of the zoo's fmnist-cfg config.json and (the first 4 kB of) model.safetensors."""
    from guidekit.zoo import WEIGHTS

    folder = WEIGHTS / "fmnist-cfg"
    return (folder / "config.json").read_bytes(), (folder / "model.safetensors").read_bytes()[:4096]


@SMALL
@given(st.data())
def test_checkpoint_loading_on_broken_files(zoo_files, data):
    """load_model and the weights readers on a folder with a broken config.json or safetensors: a GuidekitError."""
    from guidekit.checkpoints import load_model
    from guidekit.metrics.inception import read_weights
    from guidekit.zoo import WEIGHTS

    config, weights = zoo_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        if data.draw(st.booleans()):
            (folder / "config.json").write_bytes(data.draw(broken_bytes(config)))
            (folder / "model.safetensors").write_bytes((WEIGHTS / "fmnist-cfg" / "model.safetensors").read_bytes())
        else:
            (folder / "config.json").write_bytes(config)
            (folder / "model.safetensors").write_bytes(data.draw(broken_bytes(weights)))
        _ok_or_guidekit(load_model, folder)
        for name in ("w.safetensors", "w.pt"):
            (folder / name).write_bytes(data.draw(broken_bytes(weights)))
            with pytest.raises(GuidekitError):
                read_weights(folder / name)


# ---- the command-line parser ------------------------------------------------------------------------------------

def _subcommands() -> dict[str, list[argparse.Action]]:
    """Each subcommand of `guidekit` (nested ones as 'eval train-evaluator' style paths) with its actions."""
    from guidekit.cli import build_parser

    def walk(parser, prefix):
        out = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.update(walk(sub, prefix + [name]))
        if prefix:
            out[" ".join(prefix)] = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        return out

    return walk(build_parser(), [])


COMMANDS = _subcommands()
VALUE = st.one_of(NUMBER_TEXT, st.sampled_from(["fmnist-cfg", "null", "all", "trouser,7", "half", "samples",
                                                "/nonexistent", "a,b", "-", "--"]))


@st.composite
def argvs(draw, commands=tuple(sorted(COMMANDS)), positionals=True):
    """An argv of a real subcommand: real option names (sometimes misspelt) with random or valid values."""
    command = draw(st.sampled_from(commands))
    actions = [a for a in COMMANDS[command] if positionals or a.option_strings]
    argv = command.split()
    for action in draw(st.lists(st.sampled_from(actions), max_size=6)) if actions else []:
        if action.option_strings:
            argv.append(draw(st.sampled_from(action.option_strings + ["--no-such-option"])))
        if action.nargs == 0:
            continue
        choices = list(action.choices or [])
        for _ in range(1 if action.nargs in (None, "?") else draw(st.integers(0, 2))):
            argv.append(draw(st.sampled_from(choices)) if choices and draw(st.booleans()) else draw(VALUE))
    return argv


def _exit_code(fn, *args) -> int:
    """fn(*args) as an exit code: its return value (0 for None) or its SystemExit code; stdout/stderr swallowed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fn(*args)
        except SystemExit as e:
            code = e.code
    assert "Traceback" not in err.getvalue()
    return 0 if code is None else code


@FUZZ
@given(argvs())
def test_parser_on_random_argv(argv):
    """build_parser().parse_args: a namespace, or argparse's exit 2 (0 for --help/--version) — never a traceback."""
    from guidekit.cli import build_parser

    parser = build_parser()
    code = _exit_code(lambda a: parser.parse_args(a) and 0, argv)
    assert code in (0, 2)


FAST_FAILING = ("sample", "inpaint", "edit", "control", "zoo list", "zoo path")


@SMALL
@given(argvs(FAST_FAILING, positionals=False))
def test_main_on_random_argv(argv):
    """main() on commands that fail fast (the model path does not exist): exit code 0 or 2, never a traceback."""
    from guidekit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        if argv[0] != "zoo":
            argv = argv[:1] + [str(Path(tmp) / "no-model")] + argv[1:] + ["--out", str(Path(tmp) / "out")]
        code = _exit_code(main, argv)
        assert code in (0, 2)
        assert not (Path(tmp) / "out").exists()


BASELINE = {"sample": ["fmnist-cfg", "--n", "1", "--class", "0"],
            "inpaint": ["fmnist-cfg", "--image", "{gray}", "--mask", "half", "--n", "1"],
            "edit": ["fmnist-cfg", "--guide", "{gray}", "--n", "1"],
            "control": ["fmnist-cfg", "--controlnet", "fmnist-canny", "--condition-image", "{gray}", "--n", "1"]}
MAX_STUB_IMAGES = 16


def _stub(images_at: int, returns_nfe: bool = False):
    """A sampler stand-in: zeros for each seed (the seeds are argument images_at), refusing big jobs fast."""
    def run(*args, **kwargs):
        seeds = args[images_at]
        if len(seeds) > MAX_STUB_IMAGES:
            raise GuidekitError(f"(fuzz stub) {len(seeds)} images: too many to run in a test")
        images = torch.zeros(len(seeds), 1, 32, 32)
        return (images, 1) if returns_nfe else images
    return run


@contextlib.contextmanager
def _stubbed_sampling():
    """Replace the four sampling entry points of the commands by _stub, so a fuzzed command never samples."""
    import guidekit.pipelines as pipelines

    with pytest.MonkeyPatch.context() as mp:  # the commands look the pipelines up in guidekit.pipelines
        mp.setattr(pipelines, "sample_guided", _stub(2))
        mp.setattr(pipelines, "inpaint_guided", _stub(4, returns_nfe=True))
        mp.setattr(pipelines, "edit_guided", _stub(3))
        mp.setattr(pipelines, "control_samples", _stub(4))
        yield


@SMALL
@given(argvs(tuple(BASELINE), positionals=False))
def test_commands_with_stubbed_sampling(argv):
    """sample/inpaint/edit/control on the zoo model with random extra options and sampling stubbed out: exit 0 with
    a complete --out, or exit 2 with nothing written — never a traceback."""
    from guidekit.cli import main

    with tempfile.TemporaryDirectory() as tmp, _stubbed_sampling():
        gray = Path(tmp) / "gray.png"
        Image.new("L", (32, 32), 100).save(gray)
        out = Path(tmp) / "out"
        base = [a.format(gray=gray) for a in BASELINE[argv[0]]]
        code = _exit_code(main, argv[:1] + base + argv[1:] + ["--out", str(out), "--no-progress", "--device", "cpu"])
        assert code in (0, 2)
        assert (out / "manifest.json").exists() if code == 0 else not out.exists()
        assert sorted(p.name for p in Path(tmp).iterdir()) == (["gray.png", "out"] if code == 0 else ["gray.png"])
