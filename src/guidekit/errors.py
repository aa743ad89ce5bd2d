"""User-facing errors: every bad input raises GuidekitError with the value and the fix."""


class GuidekitError(ValueError):
    """A bad input or missing resource; the CLI prints the message and exits with code 2."""


def shown(value, limit: int = 120) -> str:
    """A user's value for an error message, cut in the middle past limit characters."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}…[{len(text) - limit} characters cut]…{text[-limit // 2:]}"


def check(ok: bool, message: str) -> None:
    """Raise GuidekitError(message) unless ok."""
    if not ok:
        raise GuidekitError(message)


def check_config_keys(cls, d) -> None:
    """A config dict for dataclass `cls` must be a dict holding exactly its fields (named in the error)."""
    import dataclasses

    name = cls.__name__
    check(isinstance(d, dict), f"{name}.from_dict needs a dict, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    check(not unknown, f"unknown {name} key(s) {unknown}; valid keys are {names}")
    missing = [n for n in names if n not in d]
    check(not missing, f"{name} is missing key(s) {missing}; save configs with {name}.to_dict()")
