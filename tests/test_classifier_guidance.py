"""Classifier guidance against closed forms: with the exact noisy classifier, w = 1 turns p_t(x) into p_t(x | y)."""

import pytest
import torch

from guidekit import GuidekitError
from guidekit.diffusion import NULL, NoiseSchedule
from guidekit.guidance import ClassifierFreeGuidance
from guidekit.guidance.classifier import ClassifierGuidance, CleanClassifierGuidance
from guidekit.sampling import make_step, sample
from gaussian import BatchNoise, MixtureClassifier, MixtureEps

SHAPE = (1, 2, 2)


def two_classes(schedule):
    means = torch.stack([torch.full(SHAPE, -0.6), torch.full(SHAPE, 0.5)]).double()
    means[1, 0, 0, 0] = 1.0
    stds = torch.stack([torch.full(SHAPE, 0.4), torch.full(SHAPE, 0.6)]).double()
    mix = MixtureEps(schedule, means, stds, weights=torch.tensor([0.7, 0.3], dtype=torch.float64))
    return mix, MixtureClassifier(mix)


def test_w1_with_exact_classifier_equals_class_conditional_eps():
    schedule = NoiseSchedule.linear()
    mix, clf = two_classes(schedule)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, *SHAPE, generator=g, dtype=torch.float64) * 1.3
    t = torch.tensor([5.0, 100.0, 400.0, 650.5, 900.0, 999.0])
    y = torch.tensor([0, 1, 1, 0, 1, NULL])
    guided = ClassifierGuidance(mix, clf, schedule, w=1.0)(x, t, {"y": y})
    exact = mix(x, t, {"y": y})  # ε of p_t(x | y); ∅ rows: the unconditional mixture
    torch.testing.assert_close(guided, exact, rtol=1e-9, atol=1e-9)


def test_w0_is_the_base_denoiser_exactly_and_sign_scale_by_hand():
    schedule = NoiseSchedule.linear()
    calls = []

    def base(x, t, cond):
        calls.append(cond["y"].tolist())
        return torch.zeros_like(x)

    class Linear(torch.nn.Module):  # log p(y=1|x) - log p(y=0|x) = 2·Σx: gradient of log p(1|x) is 2·p(0|x)
        def forward(self, x, t):
            s = x.flatten(1).sum(1)
            return torch.stack([-s, s], 1)

    x = torch.zeros(1, 1, 1, 1)
    t = torch.tensor([499.0])
    assert torch.equal(ClassifierGuidance(base, Linear(), schedule, 0.0)(x, t, {"y": torch.tensor([1])}), x)
    eps = ClassifierGuidance(base, Linear(), schedule, 3.0)(x, t, {"y": torch.tensor([1])})
    ab = schedule.alpha_bar_table[499].item()
    # at x = 0: p(0|x) = 1/2, ∇ log p(1|x) = 2·(1/2) = 1, so ε̄ = 0 − 3·√(1−ᾱ)·1
    assert abs(eps.item() - (-3 * (1 - ab) ** 0.5)) < 1e-6
    assert calls[-1] == [NULL]  # an unconditional base model is handed ∅


@pytest.fixture
def one_thread():
    """Tiny float64 tensors: one thread avoids thread-pool overhead that dominates here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("sampler,steps", [("ddim", 200), ("dpmpp-2m", 50), ("ddpm", 500)])
def test_guided_sampling_reproduces_the_class(sampler, steps, one_thread):
    schedule = NoiseSchedule.linear()
    mix, clf = two_classes(schedule)
    n = 2000
    y = torch.ones(n, dtype=torch.long)
    noise = BatchNoise(n)
    x = noise.randn_like(torch.zeros(n, *SHAPE, dtype=torch.float64))
    den = ClassifierGuidance(mix, clf, schedule, w=1.0)
    with torch.no_grad():
        out = sample(den, x, schedule.timesteps(steps), {"y": y}, make_step(sampler, schedule), noise)
    z = (out - mix.means[1]) / mix.stds[1]
    assert z.mean(0).abs().max() < 5 / n ** 0.5, z.mean(0)
    assert (z.std(0) - 1).abs().max() < 0.06, z.std(0)


def test_respaced_steps_hand_the_classifier_original_timesteps():
    schedule = NoiseSchedule.linear()
    mix, clf = two_classes(schedule)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen.append(t[0].item())
            return clf(x, t)

    noise = BatchNoise(2)
    with torch.no_grad():
        sample(ClassifierGuidance(mix, Spy(), schedule, 1.0), noise.randn_like(torch.zeros(2, *SHAPE)),
               schedule.timesteps(4), {"y": torch.tensor([0, 1])}, make_step("ddim", schedule), noise)
    assert seen == [999.0, 749.0, 499.0, 249.0]


def test_stacks_with_cfg_and_rejects_negative_w():
    schedule = NoiseSchedule.linear()
    mix, clf = two_classes(schedule)
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    t = torch.full((3,), 300.0)
    y = {"y": torch.tensor([0, 1, 1])}
    stacked = ClassifierGuidance(ClassifierFreeGuidance(mix, 0.5), clf, schedule, 0.7, condition_model=True)
    # −w·√(1−ᾱ)·∇log p(y|x) = w·(ε(x|y) − ε(x)) for the exact classifier
    expected = ClassifierFreeGuidance(mix, 0.5)(x, t, y) + 0.7 * (
        ClassifierGuidance(mix, clf, schedule, 1.0)(x, t, y) - mix(x, t, {"y": torch.full((3,), NULL)}))
    torch.testing.assert_close(stacked(x, t, y), expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(GuidekitError, match=">= 0"):
        ClassifierGuidance(mix, clf, schedule, -1.0)


def test_clean_classifier_variant_uses_x0_gradient():
    schedule = NoiseSchedule.linear()

    class Linear(torch.nn.Module):
        def forward(self, x):
            s = x.flatten(1).sum(1)
            return torch.stack([-s, s], 1)

    base = lambda x, t, cond: torch.zeros_like(x)  # noqa: E731  (x̂0 = x / √ᾱ)
    x, t = torch.zeros(1, 1, 1, 1), torch.tensor([99.0])
    eps = CleanClassifierGuidance(base, Linear(), schedule, 2.0)(x, t, {"y": torch.tensor([1])})
    ab = schedule.alpha_bar_table[99].item()
    assert abs(eps.item() - (-2 * (1 - ab) ** 0.5 * 1 / ab ** 0.5)) < 1e-6
