"""Tests for the noise-prediction UNet and its config."""

import json

import pytest
import torch

from guidekit.errors import GuidekitError
from guidekit.models import PRESETS, UNet, UNetConfig, count_parameters


@pytest.fixture(autouse=True)
def no_grad():
    """Forward passes without autograd bookkeeping (the backward test turns it back on)."""
    with torch.no_grad():
        yield


def make(seed=0, randomize=True, **overrides):
    """A tiny UNet in eval mode; randomize=True perturbs every weight so zero-inits no longer hide anything."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig.preset("tiny", **overrides)).eval()
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 32, 32, generator=g), torch.randint(0, 1000, (batch,), generator=g)


# ---- shapes and sizes ----

def test_tiny_forward_shape():
    model = make(randomize=False, out_channels=2, in_channels=3)
    out = model(torch.randn(3, 3, 32, 32), torch.tensor([0, 500, 999]))
    assert out.shape == (3, 2, 32, 32)


@pytest.mark.parametrize("name, low, high", [("tiny", 0, 0.5e6), ("small", 3e6, 5e6), ("base", 15e6, 40e6)])
def test_preset_parameter_counts(name, low, high):
    with torch.device("meta"):
        model = UNet(UNetConfig.preset(name))
    assert low < count_parameters(model) < high


def test_skip_shapes_match_encoder():
    model = make()
    x, t = inputs()
    h, skips = model.encode(x, model.embed(t))
    assert [(s.shape[1], s.shape[2]) for s in skips] == model.skip_shapes()
    assert h.shape[1] == model.mid_channels


def test_other_input_sizes_work():
    model = make()
    assert model(torch.randn(1, 1, 16, 24), torch.tensor([3])).shape == (1, 1, 16, 24)


# ---- initialization ----

def test_zero_init_gives_exactly_zero_output():
    model = make(randomize=False, num_classes=3)
    x, t = inputs()
    assert torch.equal(model(x, t, torch.tensor([0, 3])), torch.zeros_like(x))


def test_backward_reaches_every_parameter():
    model = make(num_classes=3).train()
    x, t = inputs()
    with torch.enable_grad():
        model(x, t, torch.tensor([1, 2])).square().mean().backward()
    for name, p in model.named_parameters():
        if name == "class_embed.weight":  # only the rows of the used labels get gradient
            assert p.grad[[1, 2]].abs().sum() > 0 and p.grad[[0, 3]].abs().sum() == 0
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---- ControlNet hooks ----

def test_methods_compose_to_forward():
    model = make(num_classes=3)
    x, t = inputs()
    y = torch.tensor([0, 2])
    emb = model.embed(t, y)
    h, skips = model.encode(x, emb)
    assert torch.allclose(model.decode(model.middle(h, emb), skips, emb), model(x, t, y))


def test_residual_injection():
    model = make()
    x, t = inputs()
    base = model(x, t)
    zeros = [torch.zeros(2, c, s, s) for c, s in model.skip_shapes()]
    mid = torch.zeros(2, model.mid_channels, 16, 16)
    assert torch.equal(model(x, t, down_residuals=zeros, mid_residual=mid), base)
    bumped = [z.clone() for z in zeros]
    bumped[2] += 0.5
    assert not torch.allclose(model(x, t, down_residuals=bumped), base)
    assert not torch.allclose(model(x, t, mid_residual=mid + 0.5), base)


def test_bad_residuals_raise():
    model = make()
    x, t = inputs()
    zeros = [torch.zeros(2, c, s, s) for c, s in model.skip_shapes()]
    with pytest.raises(GuidekitError, match="needs 4 tensors"):
        model(x, t, down_residuals=zeros[:-1])
    wrong = list(zeros)
    wrong[1] = torch.zeros(2, 5, 32, 32)
    with pytest.raises(GuidekitError, match=r"down_residuals\[1\] must have shape \(2, 16, 32, 32\)"):
        model(x, t, down_residuals=wrong)
    with pytest.raises(GuidekitError, match="mid_residual must have shape"):
        model(x, t, mid_residual=torch.zeros(2, 32, 8, 8))


# ---- conditioning ----

def test_null_class_is_default_and_classes_differ():
    model = make(num_classes=3)
    x, t = inputs()
    null = model(x, t, torch.full((2,), 3))
    assert torch.equal(model(x, t), null)
    assert not torch.allclose(model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([1, 1])))
    assert not torch.allclose(model(x, t, torch.tensor([0, 0])), null)


def test_unconditional_model_rejects_real_labels():
    model = make()
    x, t = inputs()
    assert torch.equal(model(x, t, torch.zeros(2, dtype=torch.long)), model(x, t))  # all-null is fine
    with pytest.raises(GuidekitError, match="unconditional"):
        model(x, t, torch.tensor([0, 1]))


def test_bad_labels_raise():
    model = make(num_classes=3)
    x, t = inputs()
    with pytest.raises(GuidekitError, match=r"in \[0, 3\]"):
        model(x, t, torch.tensor([0, 4]))
    with pytest.raises(GuidekitError, match="integer tensor"):
        model(x, t, torch.tensor([0.0, 1.0]))


def test_batch_elements_are_independent():
    model = make(num_classes=3)
    x, t = torch.randn(4, 1, 32, 32), torch.tensor([1.0, 250.5, 600.0, 999.0])
    y = torch.tensor([0, 1, 2, 3])
    batch = model(x, t, y)
    for i in range(4):
        alone = model(x[i:i + 1], t[i:i + 1], y[i:i + 1])
        assert torch.allclose(batch[i:i + 1], alone, atol=1e-5)


def test_fractional_and_scalar_timesteps():
    model = make()
    x, _ = inputs()
    a = model(x, torch.tensor([100.0, 100.0]))
    b = model(x, torch.tensor([100.5, 100.5]))
    assert torch.isfinite(b).all() and not torch.allclose(a, b)
    assert torch.allclose(model(x, 100.0), a) and torch.allclose(model(x, torch.tensor(100)), a)


def test_bad_inputs_raise():
    model = make()
    x, t = inputs()
    with pytest.raises(GuidekitError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 3, 32, 32), t)
    with pytest.raises(GuidekitError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(1, 32, 32), t)
    with pytest.raises(GuidekitError, match="divisible by 2"):
        model(torch.randn(2, 1, 31, 32), t)
    with pytest.raises(GuidekitError, match=r"shape \(2,\)"):
        model(x, torch.tensor([1, 2, 3]))


# ---- precision and memory format ----

def test_bf16_autocast_and_channels_last():
    model = make(num_classes=3).to(memory_format=torch.channels_last)
    x, t = inputs()
    ref = model(x, t)
    out = model(x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x.to(memory_format=torch.channels_last), t)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert torch.allclose(low.float(), ref, atol=0.1 * ref.abs().max().item())


# ---- config ----

def test_config_json_roundtrip():
    cfg = UNetConfig.preset("small", num_classes=10, prediction_type="v")
    again = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.channel_mult, tuple)
    assert UNetConfig(channel_mult=[1, 2], attention_resolutions=[16]).channel_mult == (1, 2)


@pytest.mark.parametrize("change, key", [
    ({"image_size": 31}, "image_size"),
    ({"attention_resolutions": (4,)}, "attention_resolutions"),
    ({"norm_groups": 12}, "norm_groups"),
    ({"num_heads": 3}, "num_heads"),
    ({"head_dim": 5}, "head_dim"),
    ({"dropout": 1.0}, "dropout"),
    ({"prediction_type": "noise"}, "prediction_type"),
    ({"channel_mult": ()}, "channel_mult"),
    ({"num_classes": -1}, "num_classes"),
    ({"channels": 16.0}, "channels"),
])
def test_bad_config_values_raise(change, key):
    with pytest.raises(GuidekitError, match=key):
        UNetConfig.preset("tiny", **change)


def test_bad_config_keys_raise():
    d = UNetConfig().to_dict()
    with pytest.raises(GuidekitError, match="colour"):
        UNetConfig.from_dict({**d, "colour": 1})
    del d["dropout"]
    with pytest.raises(GuidekitError, match="dropout"):
        UNetConfig.from_dict(d)
    with pytest.raises(GuidekitError, match="base"):
        UNetConfig.preset("huge")
    with pytest.raises(GuidekitError, match="widht"):
        UNetConfig.preset("tiny", widht=3)
    assert set(PRESETS) == {"tiny", "small", "base"}


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_cat_channels_is_cat_with_dense_gradients(fmt):
    """The decoder's concatenation: the same values and gradients as torch.cat, but each input's gradient is dense in
    the gradient's layout (torch.cat's are channel slices, which every convolution backward would copy)."""
    from guidekit.models.layers import cat_channels
    torch.set_grad_enabled(True)  # inside the module's no_grad fixture
    torch.manual_seed(0)
    a, b = (torch.randn(2, c, 4, 4).contiguous(memory_format=fmt).requires_grad_() for c in (3, 5))
    w = torch.randn(2, 8, 4, 4).contiguous(memory_format=fmt)
    out = cat_channels(a, b)
    assert torch.equal(out, torch.cat([a, b], 1))
    (out * w).sum().backward()
    mine = a.grad, b.grad
    a.grad = b.grad = None
    (torch.cat([a, b], 1) * w).sum().backward()
    for g, ref in zip(mine, (a.grad, b.grad)):
        assert torch.equal(g, ref) and g.is_contiguous(memory_format=fmt)
    with torch.no_grad():
        assert torch.equal(cat_channels(a, b), torch.cat([a, b], 1))
