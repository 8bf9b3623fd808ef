"""The covariance parameters θ of the random effects and the maps θ ↔ Λ.

Each term k has a lower-triangular relative covariance factor T_k (Ω_k = σ² T_k T_k',
Λ = ⊕_k I_{L_k} ⊗ T_k); θ holds T_k's lower triangle column by column (lme4's order), its
diagonal entries bounded below by 0 (:func:`theta_diagonal_mask`).  This module is the one
place that maps parameters to T_k: a covariance structure (a map from fewer parameters to
T_k) belongs here, and every reader of a fit (summary, profile, bootstrap, df) goes through it.

lme4's scale of the variance parameters: lme4's ``confint``, ``profile`` and ``bootMer`` report the random-effects parameters as
``.sig01, .sig02, …`` followed by ``.sigma``: for each term k in the model's term order,
the entries of its lower triangle taken column by column (θ's order), where a diagonal
entry (i, i) is the standard deviation of coefficient i and an off-diagonal entry (i, j)
the correlation of coefficients i and j.  For ``(Days | Subject)``: .sig01 = sd of the
intercept, .sig02 = cor(intercept, Days), .sig03 = sd of Days.  The numbering runs on
across terms.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _tril_colmajor(q: int):
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def tril_colmajor(q: int):
    """(rows, cols) of a q × q lower triangle taken column by column (θ's order); cached,
    read-only (the maps θ ↔ T run at every deviance evaluation)."""
    return _tril_colmajor(int(q))


def sdcor_names(qs) -> list[str]:
    """``.sig01``, ``.sig02``, … for terms of sizes ``qs`` (then ``.sigma`` is separate)."""
    n = sum(q * (q + 1) // 2 for q in qs)
    return [f".sig{i + 1:02d}" for i in range(n)]


def sdcor_labels(terms) -> list[str]:
    """Readable labels for the same entries: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``."""
    out = []
    for t in terms:
        rows, cols = tril_colmajor(t.q)
        for i, j in zip(rows, cols):
            if i == j:
                out.append(f"sd_{t.coef_names[i]}|{t.name}")
            else:
                out.append(f"cor_{t.coef_names[i]}.{t.coef_names[j]}|{t.name}")
    return out


def sdcor_from_theta(theta, sigma: float, qs) -> np.ndarray:
    """The .sigNN values from θ (lme4's relative Cholesky factors) and σ.

    Ω_k = σ² T_k T_k'; sd_i = √Ω_ii, cor_ij = Ω_ij / (sd_i sd_j) (NaN when an sd is 0).
    """
    theta = np.asarray(theta, dtype=float)
    out, off = [], 0
    for q in qs:
        rows, cols = tril_colmajor(q)
        T = np.zeros((q, q))
        T[rows, cols] = theta[off:off + len(rows)]
        off += len(rows)
        Om = sigma ** 2 * T @ T.T
        sd = np.sqrt(np.maximum(np.diag(Om), 0.0))
        for i, j in zip(rows, cols):
            if i == j:
                out.append(sd[i])
            else:
                den = sd[i] * sd[j]
                out.append(Om[i, j] / den if den > 0 else np.nan)
    return np.asarray(out)


def theta_from_sdcor(sdcor, sigma: float, qs) -> np.ndarray:
    """Inverse of :func:`sdcor_from_theta` (θ = vech chol(Ω_k / σ²), lower, column-major)."""
    sdcor = np.asarray(sdcor, dtype=float)
    out, off = [], 0
    for q in qs:
        rows, cols = tril_colmajor(q)
        vals = sdcor[off:off + len(rows)]
        off += len(rows)
        sd = np.zeros(q)
        C = np.eye(q)
        for v, i, j in zip(vals, rows, cols):
            if i == j:
                sd[i] = v
            else:
                C[i, j] = C[j, i] = v
        Om = np.outer(sd, sd) * C / sigma ** 2
        T = psd_cholesky(Om)
        out.append(T[rows, cols])
    return np.concatenate(out) if out else np.zeros(0)


def psd_cholesky(M: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Lower factor T with T T' = M for a positive semi-definite M (zero pivots allowed)."""
    q = M.shape[0]
    T = np.zeros_like(M, dtype=float)
    scale = max(float(np.abs(np.diag(M)).max()), 1e-300) if q else 1.0
    for j in range(q):
        d = M[j, j] - T[j, :j] @ T[j, :j]
        if d <= tol * scale:
            continue
        T[j, j] = np.sqrt(d)
        T[j + 1:, j] = (M[j + 1:, j] - T[j + 1:, :j] @ T[j, :j]) / T[j, j]
    return T


def lower_from_theta(theta: np.ndarray, q: int) -> np.ndarray:
    """Lower-triangular q × q factor from θ, lower triangle stored column by column (lme4)."""
    T = np.zeros((q, q))
    rows, cols = tril_colmajor(q)
    T[rows, cols] = theta
    return T


def theta_from_lower(T: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lower_from_theta`."""
    rows, cols = tril_colmajor(T.shape[0])
    return T[rows, cols]


def theta_diagonal_mask(q: int) -> np.ndarray:
    """Boolean mask of the θ entries that lie on the diagonal of the q × q factor."""
    rows, cols = tril_colmajor(q)
    return rows == cols


# ---------------------------------------------------------------------------- structures
#
# A covariance structure maps a term's parameters φ_k to its relative covariance
# D_k = Ω_k / σ² = S R S (S = diag of the relative sds, R a correlation matrix) and so to
# T_k = chol(D_k) and θ_k = vech T_k: the deviance keeps seeing θ (Λ's blocks); the
# optimiser, the df and the parameter count see φ.
#
#   us       θ_k itself (lme4's default: q(q+1)/2 parameters)
#   diag     one sd per column, no correlation (q)                [lme4 2.0: diag(), its default]
#   homdiag  one sd for all columns, no correlation (1)           [diag(..., hom = TRUE)]
#   hcs      compound symmetry, an sd per column and one correlation ρ ∈ (−1/(q−1), 1)
#            (q + 1)                                              [cs(), its default]
#   cs       compound symmetry with one sd (2)                    [cs(..., hom = TRUE)]
#   ar1      one sd, cor(i, j) = ρ^|i−j|, ρ ∈ (−1, 1) (2)         [ar1(), its default]
#   har1     ar1 with an sd per column (q + 1)                    [ar1(..., hom = FALSE)]
#   mask    the seed's mask C: an sd per column, a free correlation where C_ij = 1 and
#           a zero covariance where C_ij = 0 (q + free pairs)
#
# Correlations go through smooth maps of an unbounded coordinate z (no box for the
# optimiser): ρ = tanh z for ar1, har1 and the mask; for cs and hcs
# ρ = ρ_min + (1 − ρ_min)(1 + tanh z)/2 with ρ_min = −1/(q − 1), the bound of positive
# definiteness.  The sds are bounded below by 0, like θ's diagonal.

STRUCTURES = ("us", "diag", "homdiag", "cs", "hcs", "ar1", "har1", "mask")
# the formula keyword of each structure, as lme4 2.0 writes it
KEYWORD = {"us": "us()", "diag": "diag()", "homdiag": "diag(hom = TRUE)", "cs": "cs(hom = TRUE)",
           "hcs": "cs()", "ar1": "ar1()", "har1": "ar1(hom = FALSE)", "mask": "cov_mask"}
_RHO_EDGE = 1e-6   # a correlation within this of its bound is reported as a boundary fit


class TermStructure:
    """The covariance structure of one random-effects term of q columns.

    Parameters
    ----------
    kind : str
        One of :data:`STRUCTURES`.
    q : int
        The number of columns of the term.
    mask : array (q, q), optional
        For ``kind="mask"``: the symmetric 0/1 pattern C (1: free covariance).
    name : str
        The term's name (for messages).
    """

    def __init__(self, kind: str, q: int, mask=None, name: str = ""):
        if kind not in STRUCTURES:
            raise ValueError(f"unknown covariance structure {kind!r} (known: {', '.join(STRUCTURES)})")
        if kind in ("cs", "hcs", "ar1", "har1") and q < 2:
            raise ValueError(f"covariance structure {KEYWORD[kind].split('(')[0]}() needs a "
                             f"random-effects term with at least 2 columns; term {name!r} has {q}")
        self.kind, self.q, self.name = kind, int(q), name
        self.mask = None if mask is None else check_cov_mask(mask, q, name)
        if kind == "mask":
            if self.mask is None:
                raise ValueError("a mask structure needs its mask")
            r, c = np.tril_indices(q, -1)
            free = self.mask[r, c] != 0
            self.pairs = (r[free], c[free])

    # -- sizes and bounds
    @property
    def hetero(self) -> bool:
        return self.kind in ("diag", "hcs", "har1", "mask")

    @property
    def n_par(self) -> int:
        q = self.q
        return {"us": q * (q + 1) // 2, "diag": q, "homdiag": 1, "cs": 2, "ar1": 2, "hcs": q + 1,
                "har1": q + 1}.get(self.kind, q + len(self.pairs[0]) if self.kind == "mask" else 0)

    @property
    def n_sd(self) -> int:
        return self.q if self.hetero else 1

    @property
    def lower(self) -> np.ndarray:
        if self.kind == "us":
            return np.where(theta_diagonal_mask(self.q), 0.0, -np.inf)
        return np.r_[np.zeros(self.n_sd), np.full(self.n_par - self.n_sd, -np.inf)]

    def start(self) -> np.ndarray:
        """lme4's start: D = I (sds 1, correlations 0)."""
        if self.kind == "us":
            return theta_from_lower(np.eye(self.q))
        z = [self._z_of_rho(0.0)] if self.kind in ("cs", "hcs", "ar1", "har1") else \
            [0.0] * (self.n_par - self.n_sd)
        return np.r_[np.ones(self.n_sd), z]

    def from_relcov(self, D, clip: bool = True) -> np.ndarray:
        """φ whose D(φ) is near a given relative covariance D (e.g. an unstructured start):
        its sds, and its mean correlation (cs, hcs), mean lag-1 correlation (ar1, har1) or
        correlations (mask), kept away from the bounds."""
        D = np.asarray(D, float)
        if self.kind == "us":
            return theta_from_lower(psd_cholesky(D))
        sd = np.sqrt(np.maximum(np.diag(D), 0.0))
        sd = np.where(sd > 0, sd, 1.0)
        R = D / np.outer(sd, sd)
        s = sd if self.hetero else np.array([np.sqrt(np.mean(sd ** 2))])
        if self.kind in ("diag", "homdiag"):
            return s
        q = self.q
        if self.kind in ("cs", "hcs"):
            rho = float(R[np.tril_indices(q, -1)].mean())
        elif self.kind in ("ar1", "har1"):
            rho = float(np.mean(np.diag(R, -1)))
        else:
            r, c = self.pairs
            lim = 0.9 if clip else 1 - 1e-12
            return np.r_[s, np.arctanh(np.clip(R[r, c], -lim, lim))]
        lo = self.rho_min
        if clip:
            rho = float(np.clip(rho, lo + 0.05 * (1 - lo), 0.95))
        return np.r_[s, self._z_of_rho(rho)]

    # -- correlation maps
    @property
    def rho_min(self) -> float:
        return -1.0 / (self.q - 1) if self.kind in ("cs", "hcs") else -1.0

    def rho(self, z):
        if self.kind in ("cs", "hcs"):
            lo = self.rho_min
            return lo + (1.0 - lo) * 0.5 * (1.0 + np.tanh(z))
        return np.tanh(z)

    def _z_of_rho(self, rho: float) -> float:
        if self.kind in ("cs", "hcs"):
            lo = self.rho_min
            return float(np.arctanh(2.0 * (rho - lo) / (1.0 - lo) - 1.0))
        return float(np.arctanh(rho))

    # -- φ -> D -> T -> θ
    def relcov(self, phi) -> np.ndarray:
        """D = Ω/σ² at φ."""
        phi = np.asarray(phi, float)
        q = self.q
        if self.kind == "us":
            T = lower_from_theta(phi, q)
            return T @ T.T
        s = phi[:q] if self.hetero else np.full(q, phi[0])
        R = np.eye(q)
        if self.kind in ("cs", "hcs"):
            R = np.full((q, q), float(self.rho(phi[-1])))
            np.fill_diagonal(R, 1.0)
        elif self.kind in ("ar1", "har1"):
            k = np.abs(np.subtract.outer(np.arange(q), np.arange(q)))
            R = float(self.rho(phi[-1])) ** k
        elif self.kind == "mask":
            r, c = self.pairs
            R[r, c] = R[c, r] = np.tanh(phi[q:])
        return s[:, None] * R * s[None, :]

    def lower_factor(self, phi) -> np.ndarray:
        """T with T T' = D(φ); LinAlgError when D is not positive semi-definite (a mask)."""
        phi = np.asarray(phi, float)
        if self.kind == "us":
            return lower_from_theta(phi, self.q)
        if self.kind in ("diag", "homdiag"):
            return np.diag(np.broadcast_to(phi, (self.q,)).astype(float))
        D = self.relcov(phi)
        if self.kind == "mask":
            w = np.linalg.eigvalsh(D)
            if w.min() < -1e-12 * max(1.0, w.max()):
                raise np.linalg.LinAlgError("the masked covariance is not positive semi-definite")
        return psd_cholesky(D)

    def theta(self, phi) -> np.ndarray:
        return theta_from_lower(self.lower_factor(phi))

    def correlations(self, phi) -> np.ndarray:
        """The structure's correlation parameters (ρ), empty for us/diag."""
        phi = np.asarray(phi, float)
        if self.kind in ("cs", "hcs", "ar1", "har1"):
            return np.atleast_1d(self.rho(phi[-1]))
        if self.kind == "mask":
            return np.tanh(phi[self.q:])
        return np.zeros(0)

    def at_boundary(self, phi) -> bool:
        """A correlation at (within 1e-6 of) a bound of its range."""
        rho = self.correlations(phi)
        return bool(np.any(rho > 1 - _RHO_EDGE) or np.any(rho < self.rho_min + _RHO_EDGE))

    def describe(self, phi, sigma: float) -> str:
        """One line for the summary: the structure and its correlation parameter(s)."""
        label = {"diag": "diagonal", "homdiag": "diagonal, one variance", "cs":
                 "compound symmetry, one variance", "hcs": "compound symmetry", "ar1": "AR(1)",
                 "har1": "AR(1), a variance per column", "mask": "zero covariances fixed",
                 "us": "unstructured"}[self.kind]
        rho = self.correlations(phi)
        extra = f", rho = {rho[0]:.3f}" if self.kind in ("cs", "hcs", "ar1", "har1") else ""
        return f"{KEYWORD[self.kind]}: {label}{extra}; {self.n_par} parameter(s)"


def check_cov_mask(mask, q: int, name: str = "") -> np.ndarray:
    """A q × q symmetric 0/1 mask with ones on the diagonal, as a float array (else ValueError)."""
    try:
        C = np.asarray(mask, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"cov_mask must be a q × q array of 0 and 1, got {mask!r}") from None
    where = f" of term {name!r}" if name else ""
    if C.shape != (q, q):
        raise ValueError(f"cov_mask{where} must be {q}×{q} (the term's columns), got shape {C.shape}")
    if not np.all((C == 0) | (C == 1)):
        raise ValueError(f"cov_mask{where} must hold only 0 and 1")
    if not np.array_equal(C, C.T):
        raise ValueError(f"cov_mask{where} must be symmetric")
    if not np.all(np.diag(C) == 1):
        raise ValueError(f"cov_mask{where} must have ones on the diagonal (a variance cannot be "
                         "masked; drop the column instead)")
    return C


class StructureMap:
    """φ ↔ θ for all terms: the concatenated parameters of each term's structure."""

    def __init__(self, structures):
        self.structures = list(structures)
        self.sizes = [s.n_par for s in self.structures]
        self.offsets = np.cumsum([0] + self.sizes)

    @property
    def trivial(self) -> bool:
        return all(s.kind == "us" for s in self.structures)

    @property
    def n_par(self) -> int:
        return int(self.offsets[-1])

    @property
    def lower(self) -> np.ndarray:
        return np.concatenate([s.lower for s in self.structures])

    def start(self) -> np.ndarray:
        return np.concatenate([s.start() for s in self.structures])

    def from_theta(self, theta, qs, clip: bool = True) -> np.ndarray:
        """φ near an unstructured θ (per term: :meth:`TermStructure.from_relcov` of T T')."""
        out, off = [], 0
        for s, q in zip(self.structures, qs):
            k = q * (q + 1) // 2
            T = lower_from_theta(np.asarray(theta[off:off + k], float), q)
            off += k
            out.append(s.from_relcov(T @ T.T, clip=clip))
        return np.concatenate(out)

    def split(self, phi) -> list:
        phi = np.asarray(phi, float)
        return [phi[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def theta(self, phi) -> np.ndarray:
        return np.concatenate([s.theta(p) for s, p in zip(self.structures, self.split(phi))])

    def jacobian(self, phi) -> np.ndarray:
        """dθ/dφ (central differences of the cheap map φ → θ, block diagonal by term)."""
        phi = np.asarray(phi, float)
        parts = self.split(phi)
        blocks = []
        for s, p in zip(self.structures, parts):
            if s.kind == "us":
                blocks.append(np.eye(len(p)))
                continue
            J = np.zeros((s.q * (s.q + 1) // 2, len(p)))
            for j in range(len(p)):
                h = 1e-6 * max(abs(p[j]), 0.1)
                lo = s.lower[j]
                e = np.zeros(len(p))
                e[j] = h
                if np.isfinite(lo) and p[j] - h < lo:      # one-sided at an sd's bound
                    J[:, j] = (s.theta(p + e) - s.theta(p)) / h
                else:
                    J[:, j] = (s.theta(p + e) - s.theta(p - e)) / (2 * h)
            blocks.append(J)
        rows = sum(b.shape[0] for b in blocks)
        out = np.zeros((rows, len(phi)))
        r = c = 0
        for b in blocks:
            out[r:r + b.shape[0], c:c + b.shape[1]] = b
            r += b.shape[0]
            c += b.shape[1]
        return out


def structure_map(terms) -> StructureMap:
    """The :class:`StructureMap` of a design's random-effects terms."""
    return StructureMap([TermStructure(getattr(t, "structure", "us"), t.q, getattr(t, "mask", None),
                                       t.name) for t in terms])


def structured_terms(terms) -> list:
    """Names and structures of the terms that are not unstructured: [(name, kind)]."""
    return [(t.name, getattr(t, "structure", "us")) for t in terms
            if getattr(t, "structure", "us") != "us"]


def refuse_structured(terms, what: str, instead: str) -> None:
    """ValueError naming the structured terms, for a capability that reads θ as T_k."""
    st = structured_terms(terms)
    if st:
        names = ", ".join(f"{KEYWORD[k]} on {n!r}" for n, k in st)
        raise ValueError(f"{what} is not available for covariance structures ({names}); {instead}")


def lambda_theta(fit) -> np.ndarray:
    """θ of Λ's blocks (vech T_k per term) of a fit: ``fit.theta`` itself, or for a fit with
    covariance structures (whose ``theta`` is φ) the θ its structures imply."""
    smap = getattr(fit.dev, "smap", None)
    th = np.asarray(fit.theta, float)
    return th if smap is None else smap.theta(th)
