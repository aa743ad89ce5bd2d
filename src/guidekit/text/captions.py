"""Deterministic Fashion-MNIST captions from the class and measured attributes, with a held-out split, for text CFG (Ho & Salimans 2021)."""

from __future__ import annotations

import random
import re

from guidekit.errors import check
from guidekit.text.attributes import ATTRIBUTES

FORMAT = "guidekit-captions/1"

# Per Fashion-MNIST class: noun phrases (words before the adjectives, noun). The LAST one is held out of training.
CLASS_PHRASES = [
    [("a", "t-shirt"), ("a", "top"), ("a", "short-sleeved top"), ("a", "tee")],
    [("a", "pair of trousers"), ("", "trousers"), ("a", "pair of pants"), ("", "jeans")],
    [("a", "pullover"), ("a", "sweater"), ("a", "knitted sweater"), ("a", "jumper")],
    [("a", "dress"), ("a", "gown"), ("a", "frock"), ("a", "sundress")],
    [("a", "coat"), ("a", "jacket"), ("an", "overcoat"), ("a", "parka")],
    [("a", "sandal"), ("a", "pair of sandals"), ("a", "flip-flop"), ("an", "open-toed shoe")],
    [("a", "shirt"), ("a", "button-up shirt"), ("a", "blouse"), ("a", "collared shirt")],
    [("a", "sneaker"), ("a", "trainer"), ("a", "running shoe"), ("a", "tennis shoe")],
    [("a", "bag"), ("a", "handbag"), ("a", "purse"), ("a", "tote")],
    [("an", "ankle boot"), ("a", "boot"), ("a", "short boot"), ("a", "bootie")],
]
HELD_OUT_PHRASE = -1  # index in CLASS_PHRASES of each class's held-out paraphrase

# attribute -> level -> phrasings (every phrasing is seen in training)
WORDS = {"brightness": {"low": ["dark", "black", "dark-coloured"], "high": ["light", "white", "pale"]},
         "size": {"low": ["small", "little", "compact"], "high": ["large", "big", "wide"]},
         "texture": {"low": ["plain", "solid", "smooth"], "high": ["patterned", "textured", "printed"]}}
assert all(WORDS[k]["low"][0] == ATTRIBUTES[k][0] and WORDS[k]["high"][0] == ATTRIBUTES[k][1] for k in ATTRIBUTES)

# {np} = the noun phrase with the adjectives; {bare} = without; {adjs} = the adjectives joined by "and"
TEMPLATES = ["{np}", "a photo of {np}", "{bare} that looks {adjs}", "{bare}, {list}", "a picture of {np}"]
NEEDS_ADJ = {2, 3}
MENTION_P = 0.7  # each measured (non-middle) attribute is named with this probability


def held_out_combo(cls: int) -> dict[str, str]:
    """The (brightness, size) combination never named together for class cls in training (varies with the class)."""
    return {"brightness": ("low", "high")[cls % 2], "size": ("low", "high")[(cls // 2) % 2]}


def train_phrases(cls: int) -> list[tuple[str, str]]:
    """The paraphrases of class cls used in training (all but the held-out one)."""
    return [p for i, p in enumerate(CLASS_PHRASES[cls]) if i != len(CLASS_PHRASES[cls]) + HELD_OUT_PHRASE]


def _articles(text: str) -> str:
    """'a' before a vowel sound becomes 'an' (and 'an' before a consonant 'a'); spaces collapsed."""
    text = " ".join(text.split())
    text = re.sub(r"\ban? (?=[aeiou])", "an ", text)
    return re.sub(r"\ban (?=[^aeiou\W])", "a ", text)


def render(phrase: tuple[str, str], adjs: list[str], template: int) -> str:
    """One caption: the template filled with the noun phrase and the adjectives."""
    pre, noun = phrase
    np_ = f"{pre} {' '.join(adjs)} {noun}"
    and_ = " and ".join(adjs) if len(adjs) <= 2 else ", ".join(adjs[:-1]) + " and " + adjs[-1]
    return _articles(TEMPLATES[template].format(np=np_, bare=f"{pre} {noun}", adjs=and_, list=", ".join(adjs)))


def class_prompt(cls: int, adjs: list[str] | None = None) -> str:
    """The evaluation prompt of class cls: its first training paraphrase in the first template (adjectives optional)."""
    return render(train_phrases(cls)[0], list(adjs or []), 0)


def class_prompts(labels: list[int], adjs: list[list[str]] | None = None) -> list[str]:
    """class_prompt of each label (with adjs[i]), refusing labels that are not Fashion-MNIST classes."""
    K = len(CLASS_PHRASES)
    bad = sorted({y for y in labels if not 0 <= y < K})
    check(not bad, f"prompts name the images' Fashion-MNIST classes, but labels {bad} are outside 0–{K - 1}; "
                   f"use Fashion-MNIST images (or samples of its classes)")
    return [class_prompt(y, adjs[i] if adjs else None) for i, y in enumerate(labels)]


def caption(cls: int, levels: dict[str, str | None], seed: int, index: int, variant: int = 0) -> str:
    """The training caption `variant` of image `index` (class cls, measured attribute levels): deterministic in
    (seed, index, variant); never a held-out paraphrase, never the class's held-out attribute combination."""
    rng = random.Random(f"guidekit-captions/{seed}/{index}/{variant}")
    phrase = rng.choice(train_phrases(cls))
    named = [k for k in ATTRIBUTES if levels.get(k) and rng.random() < MENTION_P]
    combo = held_out_combo(cls)
    if all(k in named and levels[k] == v for k, v in combo.items()):
        named.remove(rng.choice(sorted(combo)))
    rng.shuffle(named)
    adjs = [rng.choice(WORDS[k][levels[k]]) for k in named]
    template = rng.choice([i for i in range(len(TEMPLATES)) if adjs or i not in NEEDS_ADJ])
    return render(phrase, adjs, template)


def dataset_captions(labels: list[int], levels: list[dict], seed: int, per_image: int) -> list[list[str]]:
    """per_image captions for every image (labels[i], levels[i])."""
    check(per_image >= 1, f"captions per image must be >= 1, got {per_image}")
    return [[caption(c, lv, seed, i, k) for k in range(per_image)] for i, (c, lv) in enumerate(zip(labels, levels))]


def _lev(word: str) -> tuple[str, str] | None:
    for k, d in WORDS.items():
        for level, words in d.items():
            if word in words:
                return k, level
    return None


def parse_prompt(prompt: str) -> tuple[int | None, dict[str, str]]:
    """(class index or None, {attribute: 'low' | 'high'}) named by a prompt, matching every paraphrase and phrasing
    (the longest noun match wins: 'ankle boot' over 'boot')."""
    text = " " + " ".join(re.findall(r"[a-z\-]+", prompt.lower())) + " "
    best, cls = 0, None
    for c, phrases in enumerate(CLASS_PHRASES):
        for _, noun in phrases:
            if f" {noun} " in text and len(noun) > best:
                best, cls = len(noun), c
    attrs = {}
    for word in text.split():
        hit = _lev(word)
        if hit:
            attrs[hit[0]] = hit[1]
    return cls, attrs


GROUPS = ("seen", "heldout-phrase", "heldout-combo")


def eval_prompts() -> list[dict]:
    """The fixed evaluation prompts: per class two 'seen' prompts (training paraphrases, seen combinations), the same
    attributes with the held-out paraphrase ('heldout-phrase'), and training paraphrases with the held-out
    (brightness, size) combination ('heldout-combo'). Each: prompt, group, class, attrs, template."""
    flip = {"low": "high", "high": "low"}
    out = []
    for c in range(len(CLASS_PHRASES)):
        held = held_out_combo(c)
        a = {k: flip[v] for k, v in held.items()}  # the opposite corner: seen
        b = {"brightness": flip[held["brightness"]], "size": held["size"], "texture": ("low", "high")[c % 2]}
        train, heldp = train_phrases(c), CLASS_PHRASES[c][HELD_OUT_PHRASE]
        specs = [("seen", train[0], a, 0), ("seen", train[1], b, 1),
                 ("heldout-phrase", heldp, a, 0), ("heldout-phrase", heldp, b, 1),
                 ("heldout-combo", train[0], held, 0), ("heldout-combo", train[1], held, 1)]
        for group, phrase, attrs, template in specs:
            adjs = [WORDS[k][attrs[k]][0] for k in ATTRIBUTES if k in attrs]
            out.append({"prompt": render(phrase, adjs, template), "group": group, "class": c, "attrs": dict(attrs),
                        "template": template})
    return out
