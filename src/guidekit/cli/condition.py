"""What one command's images are conditioned on: a prompt on a text model, else a class (--class, else the source
image's, else ∅), and the guidance whose default w the policy (guidekit.pipelines.policy) decides."""

from __future__ import annotations

from dataclasses import dataclass

from guidekit.errors import check


def check_prompt_args(args, model, prompts: bool | None = None, classes: bool | None = None,
                      classifier: bool = False) -> bool:
    """True when this is a prompt run; refuses prompts for label models, labels for text models, and the like.
    prompts / classes: whether --prompt / --class were given (default: args.prompts / args.classes). classifier:
    the command runs classifier guidance on a text model (sample): --class then names the classifier's target, one
    --prompt (default "") conditions the model, and False is returned (a class run)."""
    texted = model.takes_text
    prompts = args.prompts is not None if prompts is None else prompts
    classes = bool(args.classes) if classes is None else classes
    check(not prompts or texted, f"--prompt: {args.model} takes no text prompt (it was trained on class labels or "
                                 f"unconditionally); use --class, or a model trained with 'guidekit train --captions'")
    check(args.negative_prompt is None or prompts, "--negative-prompt needs --prompt (and a text-conditioned model)")
    if not texted:
        return False
    if classifier and args.classifier and not (args.clean_classifier or args.base_null):
        check(classes, f"--classifier on the text model {args.model}: name the class to guide towards with --class "
                       f"(the model itself sees --prompt, default \"\")")
        check(args.prompts is None or len(args.prompts) == 1,
              "--classifier on a text model takes one --prompt (the model's condition for every class)")
        return False
    check(not classes, f"--class: {args.model} is text-conditioned; describe the image with --prompt instead, "
                            f"e.g. --prompt \"a dark pair of trousers\"")
    check(prompts, f"{args.model} is text-conditioned: give --prompt \"...\" (repeatable; --prompt \"\" samples "
                   f"unconditionally)")
    check(not (args.classifier or args.clean_classifier or args.base_null),
          "--classifier / --clean-classifier / --base-null need class labels; a text-conditioned model is guided "
          "with --w (and --negative-prompt), or in `guidekit sample` by a noise-aware classifier (--classifier "
          "CLF --class NAME)")
    return True


def add_prompt_args(p) -> None:
    """--prompt / --negative-prompt for one prompt shared by every output (edit, inpaint, control)."""
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="a text-conditioned model (guidekit train --captions): the prompt of every output; \"\" = "
                        "the empty prompt ∅")
    p.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="with --prompt and w > 0: replaces ∅ in eps = (1+w)·eps(x, c) − w·eps(x, c_neg)")


def one_prompt(args, model, class_given: bool, n: int) -> tuple[str | None, dict]:
    """(the normalized --prompt, its cond {"text"[, "text_negative"]} with n rows) on a text-conditioned model, else
    (None, {}); refuses a prompt for a label model and a class for a text model (check_prompt_args)."""
    if not check_prompt_args(args, model, prompts=args.prompt is not None, classes=class_given):
        return None, {}
    from guidekit.pipelines import prompt_cond
    from guidekit.text.encoder import normalize_prompt

    prompt = normalize_prompt(args.prompt)
    negative = None if args.negative_prompt is None else normalize_prompt(args.negative_prompt)
    cond = prompt_cond(model, [prompt], negative)
    return prompt, {k: v.expand(n, *v.shape[1:]).contiguous() for k, v in cond.items()}


def condition_info(args, prompt: str | None, label: int, name: str) -> dict:
    """What a manifest records of the condition: the class, or on a text model the prompt and negative prompt."""
    if prompt is None:
        return {"class": label, "class_name": name}
    return {"prompt": prompt, "negative_prompt": args.negative_prompt}


def check_negative(args, guidance) -> None:
    """A negative prompt needs w > 0: it only replaces ∅ in the CFG difference."""
    check(args.negative_prompt is None or guidance.w > 0,
          f"--negative-prompt replaces ∅ in the CFG difference, which w = {guidance.w:g} does not use; give --w > 0")


def pick_label(text: str | None, default: int | None, names: list[str] | None) -> int:
    """--class as a label index: 'null' = ∅; without --class the source image's label where it is one of names,
    else ∅; an unconditional model (no names) takes no class."""
    from guidekit.data import class_index
    from guidekit.diffusion import NULL

    if text is not None and text.strip().lower() != "null":
        check(bool(names), f"--class {text}: this model is unconditional; drop --class")
        return class_index(names, text.strip())
    if text is None and default is not None and names and 0 <= default < len(names):
        return default
    return NULL


@dataclass
class Request:
    """One condition for all of a command's images, and the guidance to sample them with."""

    prompt: str | None  # the normalized --prompt on a text model, else None
    cond: dict  # the prompt's embeddings, n rows each ({} for a class model)
    label: int  # the class (NULL = ∅; NULL on a text model)
    name: str  # the class's name, "null" for ∅
    guidance: object  # pipelines.Guidance

    def info(self, args) -> dict:
        """What a manifest records of the condition: the class, or the prompt and the negative prompt."""
        return condition_info(args, self.prompt, self.label, self.name)


def request(args, model, device, cls: str | None, default: int | None, n: int) -> Request:
    """The condition and guidance of edit, inpaint and control: the prompt on a text model, else --class (cls),
    else the source image's label (default), else ∅; w as given, else the policy's (0 for a request of ∅)."""
    from guidekit.cli.common import guidance_from_args
    from guidekit.diffusion import NULL
    from guidekit.pipelines import class_names, default_w

    prompt, cond = one_prompt(args, model, cls is not None, n)
    guidance = guidance_from_args(args, model, device)
    names = class_names(model, guidance)
    label = NULL if prompt is not None else pick_label(cls, default, names)
    if args.w is None and args.guidance_scale is None:
        unconditional = prompt == "" if prompt is not None else label == NULL
        guidance.w = default_w(model, unconditional, guidance.classifier is not None, args.base_null)
    check_negative(args, guidance)
    return Request(prompt, cond, label, "null" if label == NULL else names[label], guidance)
