"""guidekit: steer diffusion models with every method of the Eurographics 2024 guidance tutorial."""

from guidekit.errors import GuidekitError

__version__ = "0.1.0"
__all__ = ["GuidekitError", "__version__"]
