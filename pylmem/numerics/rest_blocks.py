"""The rest block as independent small dense blocks: nested designs, without CHOLMOD.

When the random-effects terms are nested (``(1 | region/school/class)``, ``(x | school) +
(1 | school:class)``), the rest block A_RR of :mod:`pylmem.numerics.rest_block` splits into
independent diagonal blocks once its rows are permuted: its pattern's connected components
(one per top-level group: a region and its schools, a school and its coefficients).  With
every component small (at most ``MAX_SIZE`` rows), A_RR = P' (⊕_c S_c) P is factorised by a
batched dense Cholesky of the S_c (components of equal padded size in one stack, padded
with the identity), and L_R = P' (⊕_c L_c).  Then

* the solves L_R⁻¹B = (⊕ L_c⁻¹) P B and L_R⁻ᵀB = P' (⊕ L_c⁻ᵀ) B are batched products with
  the inverses L_c⁻¹ (rows of L_R⁻¹B in the components' order, like CHOLMOD's P'L);
* the whole inverse A_RR⁻¹ is known on every component (Σ_c = L_c⁻ᵀ L_c⁻¹), which is the
  selected inverse the analytic gradient needs (:func:`gradient`): the gradient is then
  about one more evaluation, where the CHOLMOD path has none.

The layout (:class:`BlockLayout`) is computed once from the pattern; per θ only the values
move.  Memory: Σ_c s_c² padded entries (at most ``MAX_PAD`` times the pattern's).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dtrtri
from scipy.sparse.csgraph import connected_components

from . import batched as B

MAX_SIZE = 64          # largest component (rows) the dense blocks take
MAX_PAD = 8.0          # padded dense entries at most this many times the pattern's (both triangles),
MAX_DENSE = 2_000_000  # or at most this many
MAX_PAIRS = 20_000_000  # the gradient's pairs of A entries sharing a first-term level


def _bucket_sizes(sizes: np.ndarray) -> np.ndarray:
    """Padded size of each component: exact when there are few distinct sizes, else the
    next of 1, 2, 3, 4, 6, 8, 12, 16, ... (at most ~2.25× the entries)."""
    if len(np.unique(sizes)) <= 6:
        return sizes.copy()
    ladder = np.unique(np.r_[1, 2 ** np.arange(0, 8), 3 * 2 ** np.arange(0, 7)])
    return ladder[np.searchsorted(ladder, sizes)]


class BlockLayout:
    """Components of the rest block's pattern and their place in the batched stacks.

    Parameters
    ----------
    rows, cols : arrays
        The lower-triangle entries of the pattern (the values' order in :meth:`factor`).
    m : int
        The rest block's size.
    """

    def __init__(self, rows, cols, m, labels, sizes):
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        self.m = m
        padded = _bucket_sizes(sizes)
        # components ordered by padded size, then label; rows by component, then row
        comp_order = np.lexsort((np.arange(len(sizes)), padded))
        rank = np.empty(len(sizes), np.int64)
        rank[comp_order] = np.arange(len(sizes))
        perm = np.lexsort((np.arange(m), rank[labels]))      # position -> rest row
        self.perm = perm
        first = np.r_[0, np.cumsum(sizes[comp_order])][:-1]
        start = np.empty(len(sizes), np.int64)
        start[comp_order] = first
        pos = np.empty(m, np.int64)
        pos[perm] = np.arange(m)
        local = pos - start[labels]                          # row's index in its component
        # stacks: one per padded size
        self.stacks = []
        base = np.empty(m, np.int64)                         # flat offset of a row's component
        s_of = padded[labels]
        off = 0
        for s in np.unique(padded):
            comps = comp_order[padded[comp_order] == s]      # in stack order
            nb = len(comps)
            idx = np.empty(len(sizes), np.int64)
            idx[comps] = np.arange(nb)
            in_stack = padded[labels] == s
            rws = np.flatnonzero(in_stack)
            base[rws] = off + idx[labels[rws]] * s * s
            # gather map: (nb, s) -> rest row, -1 for padding
            gmap = -np.ones((nb, s), np.int64)
            gmap[idx[labels[rws]], local[rws]] = rws
            valid = gmap >= 0
            tmpl = np.zeros((nb, s, s))
            pad_b, pad_i = np.nonzero(~valid)
            tmpl[pad_b, pad_i, pad_i] = 1.0
            self.stacks.append({"s": int(s), "nb": nb, "off": off, "gmap": gmap, "valid": valid,
                                "tmpl": tmpl, "rows": gmap[valid]})
            off += nb * s * s
        self.size = off
        self.base, self.local, self.s_of = base, local, s_of
        # pattern entries -> flat positions (lower and mirrored upper)
        self.e_lo = self.flat(rows, cols)
        self.e_up = self.flat(cols, rows)
        self.offdiag = rows != cols
        self.labels = labels
        self._pairs = None

    @classmethod
    def build(cls, rows, cols, m, max_size=None):
        """The layout, or None when the pattern is one component, a component is larger than
        ``max_size``, or the padding would waste too much."""
        max_size = MAX_SIZE if max_size is None else max_size
        if m == 0 or max_size <= 0:
            return None
        G = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, m))
        ncomp, labels = connected_components(G, directed=False)
        sizes = np.bincount(labels, minlength=ncomp)
        if ncomp < 2 or sizes.max() > max_size:     # one block: not nested (dense or CHOLMOD)
            return None
        padded = _bucket_sizes(sizes)
        dense = float((padded.astype(float) ** 2).sum())
        if dense > max(MAX_PAD * (2 * len(rows) + m), MAX_DENSE):
            return None
        return cls(rows, cols, m, labels.astype(np.int64), sizes)

    def flat(self, r1, r2):
        """Flat positions of entries (r1, r2) (rows of one component) in the stacks."""
        return self.base[r1] + self.local[r1] * self.s_of[r1] + self.local[r2]

    def scatter(self, vals, sym=True):
        """The stacks holding the pattern's lower values (and the upper mirror if ``sym``),
        identity on the padding."""
        out = np.empty(self.size)
        for st in self.stacks:
            out[st["off"]:st["off"] + st["tmpl"].size] = st["tmpl"].ravel()
        out[self.e_lo] = vals
        if sym:
            out[self.e_up[self.offdiag]] = vals[self.offdiag]
        return out

    def views(self, flat):
        """(nb, s, s) views of one flat array, stack by stack."""
        return [flat[st["off"]:st["off"] + st["nb"] * st["s"] ** 2].reshape(st["nb"], st["s"], st["s"])
                for st in self.stacks]

    def factor(self, vals) -> BlockCholesky:
        """L_R at the pattern's (lower) values; raises LinAlgError if not positive definite."""
        S = self.scatter(vals)
        Ls, logdet = [], 0.0
        for V in self.views(S):
            Lc = np.linalg.cholesky(V)
            logdet += 2.0 * float(np.log(np.diagonal(Lc, axis1=1, axis2=2)).sum())
            Ls.append(Lc)
        if not np.isfinite(logdet):
            raise np.linalg.LinAlgError("rest block not positive definite")
        return BlockCholesky(self, Ls, logdet)


def profiled_parts(dev, f, K0, KR):
    """The parts of ∂d/∂D that β̂ and σ̂² being profiled out add, for the first term's and the
    rest's Z'V⁻¹W (K0 (G, q0, r), KR (m, r)): g = K v with v = [−β̂; 1], c = ν / r² and, for
    REML with fixed effects, K's X columns times R_X⁻ᵀ (else None)."""
    p = dev.p
    v = np.r_[-f.beta(), 1.0]
    g0, gR = K0 @ v, KR @ v
    nu = dev.n - p if dev.reml else dev.n
    c = nu / f.pwrss
    KX0 = KXR = None
    if dev.reml and p:
        RXinv = np.linalg.inv(f.RX)
        KX0 = K0[:, :, :p] @ RXinv.T
        KXR = KR[:, :p] @ RXinv.T
    return g0, gR, c, KX0, KXR


class OffDiagonal:
    """L_R0 of a rest factor, formed on first use (:meth:`RestStructure.off_diagonal`)."""

    _offdiag = None
    _LR0 = None

    def set_offdiag(self, structure, T, N):
        self._offdiag = (structure, T, N)

    @property
    def LR0(self):
        """L_R0 = Λ_R'A (⊕_j T0 L0_j⁻ᵀ), sparse m × L0 q0, formed on first use."""
        if self._LR0 is None and self._offdiag is not None:
            st, T, N = self._offdiag
            self._LR0 = st.off_diagonal(T, N)
        return self._LR0


class BlockCholesky(OffDiagonal):
    """L_R = P' (⊕_c L_c) with L_R L_R' = A_RR, the components' dense factors (the readers'
    interface of :class:`pylmem.numerics.rest_block.RestCholesky`)."""

    dense = None

    def __init__(self, layout, Ls, logdet):
        self.m = layout.m
        self.logdet = logdet
        self.layout = layout
        self.Ls = Ls
        self._Linv = None

    @property
    def Linv(self):
        """The inverses L_c⁻¹, stack by stack (formed on first use; LAPACK's triangular
        inverse per block, ~3× cheaper than a batched general inverse)."""
        if self._Linv is None:
            out = []
            for k, Lc in enumerate(self.Ls):
                nb, s = Lc.shape[:2]
                if 2 * s <= nb:     # substitution vectorised over the blocks (s steps)
                    out.append(self._substitute(k, np.broadcast_to(np.eye(s), (nb, s, s))))
                else:
                    out.append(np.stack([dtrtri(L, lower=1)[0] for L in Lc]))
            self._Linv = out
        return self._Linv

    def _solve(self, k, X, trans):
        """L_c⁻¹ X or L_c⁻ᵀ X for stack k, by the inverses (the gradient needs them anyway)."""
        Li = self.Linv[k]
        return (np.swapaxes(Li, 1, 2) if trans else Li) @ X

    def _substitute(self, k, X):
        """L_c⁻¹ X for stack k by forward substitution, vectorised over the blocks."""
        L = self.Ls[k]
        out = np.empty(X.shape)
        for i in range(L.shape[1]):
            acc = X[:, i] - np.einsum("bj,bjr->br", L[:, i, :i], out[:, :i]) if i else X[:, i]
            out[:, i] = acc / L[:, i, i, None]
        return out

    def _gather(self, Bm):
        out = []
        for st in self.layout.stacks:
            X = np.zeros((st["nb"], st["s"]) + Bm.shape[1:])
            X[st["valid"]] = Bm[st["rows"]]
            out.append(X)
        return out

    def _sparse_Linv(self):
        """⊕_c L_c⁻¹ P as a sparse m × m matrix (rows in the components' order, columns the
        rest block's): for many right-hand sides, where the blocks are sparse (a region's
        arrow of schools has an arrow-shaped inverse factor); None when it is dense."""
        if getattr(self, "_Linv_sp", None) is None:
            rows, cols, vals = [], [], []
            pos = 0
            for Li, st in zip(self.Linv, self.layout.stacks):
                n = len(st["rows"])
                rank = -np.ones(st["valid"].shape, np.int64)
                rank[st["valid"]] = pos + np.arange(n)
                b, i, j = np.nonzero(Li * (st["valid"][:, :, None] & st["valid"][:, None, :]))
                rows.append(rank[b, i])
                cols.append(st["gmap"][b, j])
                vals.append(Li[b, i, j])
                pos += n
            nnz = sum(len(v) for v in vals)
            dense_flops = sum(st["nb"] * st["s"] ** 2 for st in self.layout.stacks)
            self._Linv_sp = False if nnz > 0.5 * dense_flops else sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.m, self.m))
        return self._Linv_sp if self._Linv_sp is not False else None

    def solve_L(self, Bm):
        """L_R⁻¹ B (rows in the components' order)."""
        Bm = np.asarray(Bm, dtype=float)
        vec = Bm.ndim == 1
        B2 = Bm.reshape(self.m, -1)
        if B2.shape[1] > 32 and self._sparse_Linv() is not None:
            return self._sparse_Linv() @ B2
        parts = [self._solve(k, X, False)[st["valid"]]
                 for k, (X, st) in enumerate(zip(self._gather(B2), self.layout.stacks))]
        out = np.concatenate(parts, axis=0)
        return out.ravel() if vec else out

    def solve_Lt(self, Bm):
        """L_R⁻ᵀ B (B's rows in the components' order, the result's in the rest block's)."""
        Bm = np.asarray(Bm, dtype=float)
        vec = Bm.ndim == 1
        B2 = Bm.reshape(self.m, -1)
        if B2.shape[1] > 32 and self._sparse_Linv() is not None:
            return self._sparse_Linv().T @ B2
        out = np.empty_like(B2)
        i = 0
        for k, st in enumerate(self.layout.stacks):
            n = len(st["rows"])
            X = np.zeros((st["nb"], st["s"], B2.shape[1]))
            X[st["valid"]] = B2[i:i + n]
            out[st["rows"]] = self._solve(k, X, True)[st["valid"]]
            i += n
        return out.ravel() if vec else out

    def inverse_flat(self):
        """A_RR⁻¹ on every component (Σ_c = L_c⁻ᵀ L_c⁻¹), as one flat array of the stacks."""
        return np.concatenate([(np.swapaxes(Li, 1, 2) @ Li).ravel() for Li in self.Linv])

    def inv_diag_blocks(self, sizes, chunk=256):
        """Diagonal blocks of A_RR⁻¹ for consecutive block sizes (q_k, L_k)."""
        Sig = self.inverse_flat()
        out, off = [], 0
        for q, L in sizes:
            r = off + np.arange(L * q).reshape(L, q)
            out.append(Sig[self.layout.flat(r[:, :, None], r[:, None, :])])
            off += L * q
        return out


def _lam_entries(rest, layout):
    """For Λ_R on the components: flat positions of its entries and where each takes its
    value in the concatenated T_k (row-major), computed once."""
    pos, src = [], []
    tpos = 0
    for k in range(len(rest.qs) - 1):
        q, L = rest.qs[k + 1], rest.n_levels[k + 1]
        a_, b_ = np.tril_indices(q)
        g = np.repeat(np.arange(L), len(a_))
        r = rest.offsets[k] + g * q + np.tile(a_, L)
        c = rest.offsets[k] + g * q + np.tile(b_, L)
        pos.append(layout.flat(r, c))
        src.append(tpos + np.tile(a_ * q + b_, L))
        tpos += q * q
    return np.concatenate(pos), np.concatenate(src)


def _zz_sym(rest):
    """Z_R'Z_R as a symmetric sparse matrix, from the pattern's lower values."""
    r, c = rest._low
    v = rest.zz[rest.sel]
    off = r != c
    return sp.csr_matrix((np.r_[v, v[off]], (np.r_[r, c[off]], np.r_[c, r[off]])), shape=(rest.m, rest.m))


def _pairs(rest, layout):
    """All ordered pairs (e, e') of A = Z_R'Z_0 entries of one first-term level: their flat
    position in the component stacks, weight A_e A_e' and target (j, u, u') in (L0, q0, q0)."""
    A = rest.A.tocsc()
    q0 = rest.q0
    cnt = np.diff(A.indptr).reshape(-1, q0).sum(axis=1)         # entries per level j
    if float((cnt.astype(float) ** 2).sum()) > MAX_PAIRS:
        return None
    Acol = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    j_of, u_of, row_of, val = Acol // q0, Acol % q0, A.indices.astype(np.int64), A.data
    order = np.argsort(j_of, kind="stable")
    j_of, u_of, row_of, val = j_of[order], u_of[order], row_of[order], val[order]
    starts = np.r_[0, np.cumsum(cnt)][:-1]
    # pairs (e, e') inside each segment: e runs over the segment, e' over the segment
    c2 = cnt.astype(np.int64)
    e = np.repeat(np.arange(len(j_of)), np.repeat(c2, c2))
    seg_start = np.repeat(starts, c2 * c2)
    within = np.arange(len(e)) - np.repeat(np.cumsum(c2 * c2) - c2 * c2, c2 * c2)
    e2 = seg_start + within % np.repeat(c2, c2 * c2)
    pos = layout.flat(row_of[e], row_of[e2])
    w = val[e] * val[e2]
    tgt = (j_of[e] * q0 + u_of[e]) * q0 + u_of[e2]
    return pos, w, tgt


def available(rest) -> bool:
    """Whether the rest block is factorised in dense blocks (and the gradient's pairs fit)."""
    layout = getattr(rest, "blocks", None)
    if layout is None:
        return False
    if layout._pairs is None:
        layout._pairs = _pairs(rest, layout) or False
    return layout._pairs is not False


def gradient(dev, f, centred: bool = False) -> np.ndarray:
    """∂d/∂θ at the factor ``f`` (several terms, rest block in dense blocks); ``centred``:
    ∂d/∂θ̃ for the first term's centred coordinates.

    With A the whole matrix Λ'Z'ZΛ + I and V = I + ZΛΛ'Z', (Z'V⁻¹Z)Λ = Z'ZΛA⁻¹, so
    ∂d/∂T_k = 2 Σ_l [Z'ZΛA⁻¹ − c g g'Λ − K_X K_X'Λ]_{kl,kl} (c = ν/r², g = Z'V⁻¹(y − Xβ̂),
    K_X = Z'V⁻¹X R_X⁻¹ for REML).  By blocks, with Σ = A_RR⁻¹ (known on each component),
    M_j = N_j N_j' and Q_j = A_j'Λ_R Σ Λ_R'A_j (a sum over pairs of A_j's entries, all in one
    component):

    * first term: Σ_j (G_j + (G_j M_j − I) Q_j) N_j L0_j⁻¹;
    * rest terms: the diagonal blocks of X Λ_R Σ, X = Z_R'Z_R − Σ_j A_j M_j A_j' (the Schur
      complement before the Λ_R sandwich);
    * Z'V⁻¹W = Z'W − Z'ZΛ U, U = A⁻¹Λ'Z'W = L⁻ᵀ[C0; C_R] (the factor's back substitution).
    """
    rest, layout = dev.rest, dev.rest.blocks
    if not available(rest):
        raise NotImplementedError("the rest block is not factorised in dense blocks")
    T = f.T
    T0 = T[0]
    q0, G, m, p = dev.qs[0], dev.n_levels[0], dev.m, dev.p
    LR = f.LRR
    N = LR._offdiag[2]
    N = np.asarray(N, float).reshape(G, 1, 1) if q0 == 1 else N            # (G, q0, q0)
    L0 = f.L0                                                                # (G, q0, q0)
    Gj = dev.cp_data.terms[0].ZtZ                                            # user's Z0
    ZW0 = dev.cp_data.terms[0].ZtW                                           # (G, q0, r)
    # the selected inverse, and Ω = Λ_R Σ Λ_R' on the components
    Sig = LR.inverse_flat()
    tv = np.concatenate([Tk.ravel() for Tk in T[1:]])
    if getattr(layout, "_lam", None) is None:
        layout._lam = _lam_entries(rest, layout)
    lpos, lsrc = layout._lam
    scalar = all(q == 1 for q in dev.qs[1:])
    Lam = np.zeros(layout.size if not scalar else m)
    if scalar:          # Λ_R diagonal: its entries per row, in the stacks' (nb, s) layout
        Lam = np.concatenate([np.full(L, Tk[0, 0]) for L, Tk in zip(dev.n_levels[1:], T[1:])])
    else:
        Lam[lpos] = tv[lsrc]
    if rest.K is None:
        Xpre = rest.zz
    elif q0 == 1:
        Xpre = rest.zz - rest.K @ (N[:, 0, 0] ** 2)
    else:
        Xpre = rest.zz - rest.K @ np.einsum("gik,gjk->gij", N, N)[:, rest._triu[0], rest._triu[1]].ravel()
    Xd = layout.scatter(Xpre[rest.sel])
    # padding: zero (Σ is the identity there, Λ and X zero)
    Om = np.empty(layout.size)
    if scalar:
        P_diag = np.empty(m)      # the diagonal of X Λ Σ, per rest row: Σ_a X[l, a] (ΛΣ)[a, l]
        for st, S, Xv, Ov in zip(layout.stacks, layout.views(Sig), layout.views(Xd), layout.views(Om)):
            lam = np.zeros((st["nb"], st["s"]))
            lam[st["valid"]] = Lam[st["rows"]]
            LS = lam[:, :, None] * S
            np.multiply(LS, lam[:, None, :], out=Ov)
            P_diag[st["rows"]] = np.einsum("bla,bal->bl", Xv, LS)[st["valid"]]
    else:
        P_R = np.zeros(layout.size)
        for st, S, Lv, Xv, Pv, Ov in zip(layout.stacks, layout.views(Sig), layout.views(Lam),
                                         layout.views(Xd), layout.views(P_R), layout.views(Om)):
            LS = Lv @ S
            Ov[...] = LS @ np.swapaxes(Lv, 1, 2)
            Pv[...] = Xv @ LS
    # first term: Q_j from the pairs of A_j's entries
    pos, w, tgt = layout._pairs
    Q = np.bincount(tgt, weights=w * Om[pos], minlength=G * q0 * q0).reshape(G, q0, q0)
    CR = f.CR                                                                # user's W
    uR = LR.solve_Lt(CR)                                                     # U's rest rows (m, r)
    LuR = rest.lam_dense(T, uR)
    if getattr(layout, "_At", None) is None:
        layout._At = rest.A.T.tocsr()
    AtLu = layout._At @ LuR                                                  # (G q0, r)
    if q0 == 1:         # scalar first term: every per-level product is a vector operation
        n_, l0, g_, q_ = N[:, 0, 0], f.L0s[0, 0], Gj[:, 0, 0], Q[:, 0, 0]
        P0 = np.array([[float(((g_ + (g_ * n_ * n_ - 1.0) * q_) * n_ / l0).sum())]])
        u0 = (f.C0s[0].T - n_[:, None] * AtLu) / l0[:, None]                # (G, r)
        Tu0 = T0[0, 0] * u0
        K0 = (ZW0[:, 0, :] - g_[:, None] * Tu0 - AtLu)[:, None, :]
    else:
        M = N @ np.swapaxes(N, 1, 2)
        H = B.solve_lower(L0, np.broadcast_to(np.eye(q0), (G, q0, q0)).copy())  # L0_j⁻¹
        P0 = ((Gj + (Gj @ M - np.eye(q0)) @ Q) @ N @ H).sum(axis=0)
        AtLu = AtLu.reshape(G, q0, -1)
        u0 = B.solve_lower_t(L0, f.C0 - np.swapaxes(N, 1, 2) @ AtLu)        # (G, q0, r)
        Tu0 = T0 @ u0
        K0 = ZW0 - Gj @ Tu0 - AtLu
    if getattr(layout, "_zz", None) is None:
        layout._zz = _zz_sym(rest)
    KR = dev.centring.from_w(rest.ZRtW) - rest.A @ Tu0.reshape(G * q0, -1) - layout._zz @ LuR
    g0, gR, c, KX0, KXR = profiled_parts(dev, f, K0, KR)
    reml_p = KX0 is not None
    D0 = c * g0.T @ g0
    if reml_p:
        D0 = D0 + np.einsum("gup,gvp->uv", KX0, KX0)
    GT = P0 - D0 @ T0
    MZ = dev.centring.MZ
    if centred and MZ is not None:
        GT = MZ.T @ GT
    parts = [(2.0 * GT)[dev._tril[0]]]
    for k in range(1, len(dev.qs)):
        a, b = rest.offsets[k - 1], rest.offsets[k]
        q, L = dev.qs[k], dev.n_levels[k]
        if scalar:
            Pk = np.array([[P_diag[a:b].sum()]])
        else:
            r = a + np.arange(L * q).reshape(L, q)
            Pk = P_R[layout.flat(r[:, :, None], r[:, None, :])].sum(axis=0)
        gk = gR[a:b].reshape(L, q)
        Dk = c * gk.T @ gk
        if reml_p:
            Kk = KXR[a:b].reshape(L, q, p)
            Dk = Dk + np.einsum("lup,lvp->uv", Kk, Kk)
        parts.append((2.0 * (Pk - Dk @ T[k]))[dev._tril[k]])
    return np.concatenate(parts)
