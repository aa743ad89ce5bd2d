"""User-facing errors: every bad input raises GuidekitError with the value and the fix."""


class GuidekitError(ValueError):
    """A bad input or missing resource; the CLI prints the message and exits with code 2."""


def check(ok: bool, message: str) -> None:
    """Raise GuidekitError(message) unless ok."""
    if not ok:
        raise GuidekitError(message)
