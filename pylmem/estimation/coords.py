"""The optimiser's coordinates x = θ̃ ∘ s, in which the profiled deviance is well scaled."""
from __future__ import annotations

import numpy as np


class Coordinates:
    """The optimiser's coordinates x = θ̃ ∘ s, in which d is well scaled.

    θ̃ is θ for the first term's centred columns Z̃0 = Z0 M_Z (a random slope on
    x = 10⁴ + noise is, in θ, a near-singular T with entries 10⁴ apart; in θ̃ it is not),
    and s scales each row of T̃ by the RMS of its Z̃ column (x×10⁻¹² gets θ̃ s ~ 1).
    Both maps are exact reparametrisations: d is invariant, so the optimum is the same,
    and the optimiser sees the same problem whatever the location and scale of the
    covariates (the scale of y does not enter θ).  No box: θ̃'s diagonal is only ≥ 0.
    """

    def __init__(self, dev):
        self.dev = dev
        self.s = dev.centred_scales()
        self.lower = dev.lower

    def to_theta(self, x) -> np.ndarray:
        th = self.dev.theta_from_centred(np.asarray(x, float) / self.s)
        th[np.isfinite(self.lower)] = np.maximum(th[np.isfinite(self.lower)], 0.0)
        return th

    def from_theta(self, theta) -> np.ndarray:
        return self.dev.theta_to_centred(theta) * self.s

    def f(self, x) -> float:
        return self.dev(np.asarray(x, float) / self.s, centred=True)

    def fg(self, x):
        v, g = self.dev.value_and_gradient(np.asarray(x, float) / self.s, centred=True)
        return v, g / self.s
