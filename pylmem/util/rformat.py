"""R's number formatting and text layout, reproduced so that printed tables carry the digits R
would print: ``format``/``formatReal`` (:func:`format_real`), ``round`` (:func:`r_round`),
``zapsmall``, ``format.pval``, significance stars, ``print.default`` of a matrix
(:func:`print_matrix`), ``cat(fill=TRUE)`` and ``abbreviate``.

Support code: it knows nothing of mixed models, so every layer that prints a table may use it.
"""
from __future__ import annotations

import math

import numpy as np

WIDTH = 80          # getOption("width")

# ============================================================== R's number formatting


def _scientific(x: float, digits: int):
    """R's ``scientific()`` (format.c): sign, decimal exponent and significant digits of x."""
    r = abs(x)
    if r == 0:
        return x < 0, 0, 1, False
    mant, exp = f"{r:.{digits - 1}e}".split("e")
    kpower = int(exp)
    sig = mant.replace(".", "").rstrip("0")
    nsig = max(1, len(sig))
    rgt = min(max(digits - kpower, 0), 15)
    fuzz = 0.5 / 10 ** rgt
    widens = 0 < kpower <= 15 and r < 10 ** kpower - fuzz
    return x < 0, kpower, nsig, widens


def format_real(values, digits: int = 7, nsmall: int = 0, na: str = "NA") -> list[str]:
    """R's ``format(x, digits=)`` of a numeric vector: a common fixed or scientific format,
    strings padded to a common width (right-justified)."""
    vals = [float(v) for v in np.asarray(values, dtype=float).ravel()]
    fin = [v for v in vals if math.isfinite(v)]
    if not fin:
        out = [na if math.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in vals]
    else:
        rgt = mxsl = mxns = mxe = -10 ** 9
        mne = 10 ** 9
        neg = 0
        for v in fin:
            neg_i, kp, nsig, widens = _scientific(v, digits)
            left = kp + 1 - (1 if widens else 0)
            sleft = neg_i + (1 if left <= 0 else left)
            right = nsig - left
            neg = max(neg, int(neg_i))
            rgt = max(rgt, right)
            mxsl = max(mxsl, sleft)
            mxns = max(mxns, nsig)
            mxe, mne = max(mxe, kp), min(mne, kp)
        mxl = max((_scientific(v, digits)[1] + 1) for v in fin)
        if mxl < 0:
            mxsl = 1 + neg
        rgt = max(rgt, 0)
        wF = mxsl + rgt + (rgt != 0)
        e = 2 if (mxe >= 100 or mne <= -99) else 1
        d = mxns - 1
        wE = neg + (d > 0) + d + 4 + e
        out = []
        if wF <= wE:
            rgt = max(rgt, nsmall)
            for v in vals:
                if math.isfinite(v):
                    s = f"{v:.{rgt}f}"
                    if float(s) == 0 and s.startswith("-"):
                        s = s[1:]
                    out.append(s)
                else:
                    out.append(na if math.isnan(v) else ("Inf" if v > 0 else "-Inf"))
        else:
            for v in vals:
                if math.isfinite(v):
                    m, x = f"{v:.{d}e}".split("e")
                    ex = int(x)
                    out.append(f"{m}e{'-' if ex < 0 else '+'}{abs(ex):0{e + 1}d}")
                else:
                    out.append(na if math.isnan(v) else ("Inf" if v > 0 else "-Inf"))
    w = max(len(s) for s in out)
    return [s.rjust(w) for s in out]


def r_round(x, digits):
    """R's ``round(x, digits)`` (non-integer digits are rounded to the nearest integer)."""
    d = int(math.floor(digits + 0.5))
    return np.round(np.asarray(x, dtype=float), d) + 0.0


def zapsmall(x, digits: int):
    """R 4.2's ``zapsmall``: round to ``digits - log10(max|x|)`` decimals."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    if not ok.any():
        return x
    mx = np.abs(x[ok]).max()
    return r_round(x, max(0.0, digits - math.log10(mx)) if mx > 0 else digits)


def format_pval(pv, digits: int, eps: float = 2.220446049250313e-16) -> list[str]:
    """R's ``format.pval``."""
    pv = [float(p) for p in pv]
    out = [""] * len(pv)
    idx = [i for i, p in enumerate(pv) if not math.isnan(p)]
    is0 = [i for i in idx if pv[i] < eps]
    rest = [i for i in idx if pv[i] >= eps]
    rr = {}
    if rest:
        fixp = [i for i in rest if pv[i] == 0 or math.floor(math.log10(pv[i])) >= -3]
        sci = [i for i in rest if i not in fixp]
        for group in (fixp, sci):
            if group:
                for i, s in zip(group, format_real([pv[i] for i in group], digits)):
                    rr[i] = s
        for i in rest:
            out[i] = rr[i]
    if is0:
        dg = max(1, digits - 2)
        if rest:
            nc = max(len(s) for s in rr.values())
            if dg > 1 and dg + 6 > nc:
                dg = max(1, nc - 7)
            sep = "" if (dg == 1 and nc <= 6) else " "
        else:
            sep = "" if dg == 1 else " "
        for i in is0:
            out[i] = "<" + sep + format_real([eps], dg)[0].strip()
    for i, p in enumerate(pv):
        if math.isnan(p):
            out[i] = "NA"
    return out


def signif_stars(pv) -> list[str]:
    out = []
    for p in pv:
        if p is None or (isinstance(p, float) and math.isnan(p)):
            out.append("")
        elif p <= 0.001:
            out.append("***")
        elif p <= 0.01:
            out.append("**")
        elif p <= 0.05:
            out.append("*")
        elif p <= 0.1:
            out.append(".")
        else:
            out.append(" ")
    return out


SIGNIF_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"

# ============================================================== R's print layouts


def anova_table_lines(cols: dict, pv, rownames, pname: str, *, p_digits: int = 4,
                      na: str = "", signif: bool = True) -> list[str]:
    """The tail of R's ``print.anova``: the formatted columns ``cols`` (name -> strings),
    the p-value column ``pname`` from ``pv`` (``na`` where missing), significance stars
    and their legend when some p < 0.1."""
    pv = np.asarray(pv, dtype=float)
    n = len(pv)
    ok = ~np.isnan(pv)
    ps = [na] * n
    if ok.any():
        for i, s in zip(np.flatnonzero(ok), format_pval(pv[ok], p_digits)):
            ps[i] = s
    names = list(cols) + [pname]
    cells = [[cols[c][i] for c in cols] + [ps[i]] for i in range(n)]
    stars = signif and ok.any() and bool(np.any(pv[ok] < 0.1))
    if stars:
        st = signif_stars(pv)
        w = max(len(s) for s in st)
        for i in range(n):
            cells[i].append(st[i].ljust(w))
        names.append("")
    lines = print_matrix(cells, [str(r) for r in rownames], names, right=True)
    if stars:
        lines += ["---", SIGNIF_LEGEND]
    return lines


def print_matrix(cells, rownames, colnames, *, right: bool, gap: int = 1,
                 width: int = WIDTH) -> list[str]:
    """``print.default`` of a character matrix (``quote = FALSE``); column blocks wrap at width."""
    cells = [list(r) for r in cells]
    ncol = len(colnames)
    rw = max([len(r) for r in rownames], default=0)
    cw = [max([len(colnames[j])] + [len(r[j]) for r in cells]) for j in range(ncol)]
    just = (lambda s, w: s.rjust(w)) if right else (lambda s, w: s.ljust(w))
    lines, j0 = [], 0
    while j0 < ncol or (ncol == 0 and not lines):
        tot, j1 = rw, j0
        while j1 < ncol:
            if j1 > j0 and tot + gap + cw[j1] > width:
                break
            tot += gap + cw[j1]
            j1 += 1
        lines.append(" " * rw + "".join(" " * gap + just(colnames[j], cw[j]) for j in range(j0, j1)))
        for rn, r in zip(rownames, cells):
            lines.append(rn.ljust(rw) + "".join(" " * gap + just(r[j], cw[j]) for j in range(j0, j1)))
        if ncol == 0:
            break
        j0 = j1
    return [ln.rstrip() for ln in lines]


def print_named(names, values, *, gap: int = 1, width: int = WIDTH) -> list[str]:
    """``print`` of a named vector of (already formatted) strings: right-justified columns."""
    w = max(max(len(n) for n in names), max(len(v) for v in values))
    per = max(1, width // (w + gap))
    lines = []
    for i in range(0, len(names), per):
        lines.append("".join(n.rjust(w) + " " * gap for n in names[i:i + per]).rstrip())
        lines.append("".join(v.rjust(w) + " " * gap for v in values[i:i + per]).rstrip())
    return lines


def cat_fill(items, width: int = WIDTH) -> list[str]:
    """``cat(..., fill = TRUE)``: items joined by spaces, a new line where one would overflow."""
    lines, cur = [], None
    for it in items:
        if cur is None:
            cur = it
        elif len(cur) + 1 + len(it) > width:
            lines.append(cur)
            cur = it
        else:
            cur = cur + " " + it
    lines.append(cur or "")
    return [ln.rstrip() for ln in lines]


def _strip_chars(s: str, minlen: int) -> str:
    """R's C ``stripchars`` (abbreviate with ``use.classes = TRUE``)."""
    b = list(s.strip())
    if len(b) < minlen:  # R: strlen < minlen -> as is (== minlen also unchanged below)
        return "".join(b)

    def first(i):
        return b[i - 1].isspace()

    def last(i):
        return (not b[i - 1].isspace()) and (i + 1 >= len(b) or b[i + 1].isspace())

    def vowel(c):
        return c in "aeiou"

    nspace = 0
    j = 1
    for i in range(len(b) - 1, 0, -1):
        if b[i].isspace():
            if j:
                del b[i]
            else:
                nspace += 1
        else:
            j = 0
        if len(b) - nspace <= minlen:
            return _done(b, minlen)
    passes = [lambda i: vowel(b[i]) and last(i),
              lambda i: vowel(b[i]) and not first(i),
              lambda i: b[i].islower() and last(i),
              lambda i: b[i].islower() and not first(i),
              lambda i: not first(i) and not b[i].isspace()]
    for cond in passes:
        for i in range(len(b) - 1, 0, -1):
            if i < len(b) and cond(i):
                del b[i]
            if len(b) - nspace <= minlen:
                return _done(b, minlen)
    return _done(b, minlen)


def _done(b, minlen):
    if len(b) > minlen:
        b = [b[0]] + [c for c in b[1:] if not c.isspace()]
    return "".join(b)


def abbreviate(names, minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)`` (method "left.kept", not strict)."""
    names = [n.strip() for n in names]
    uniq = list(dict.fromkeys(names))
    x = list(uniq)
    these = list(range(len(uniq)))
    ml = minlength
    while True:
        for i in these:
            x[i] = _strip_chars(uniq[i], ml)
        dup = [i for i in range(len(x)) if x[i] in x[:i]]
        if not dup:
            break
        ml += 1
        dvals = {x[i] for i in dup}
        these = [i for i in range(len(x)) if x[i] in dvals]
    m = dict(zip(uniq, x))
    return [m[n] for n in names]
