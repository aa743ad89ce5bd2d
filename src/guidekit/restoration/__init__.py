"""Zero-shot restoration (DPS, MCG, DDNM(+), ΠGDM and RePaint for any linear A) on the one sampling loop."""

from guidekit.restoration.ddnm import DDNM, DDNMPlus
from guidekit.restoration.dps import DPS
from guidekit.restoration.operators import TASKS, GaussianBlur, Inpaint, Operator, SuperResolution, make_operator
from guidekit.restoration.pigdm import PiGDM
from guidekit.restoration.projection import MeasurementConstraint
from guidekit.restoration.restore import GRADIENT_METHODS, METHODS, NOISE_AWARE, Method, restore

__all__ = ["DDNM", "DDNMPlus", "DPS", "GRADIENT_METHODS", "GaussianBlur", "Inpaint", "METHODS", "MeasurementConstraint",
           "Method", "NOISE_AWARE", "Operator", "PiGDM", "SuperResolution", "TASKS", "make_operator", "restore"]
