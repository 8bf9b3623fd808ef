"""Printed forms of a fit, laid out as lme4 prints them.

``short_repr(fit)`` is lme4's ``print(fit)``; :class:`Summary` is ``summary(fit)``, whose
``str()`` follows ``lme4:::print.summary.merMod`` line by line (R's ``format``,
``printCoefmat``, ``zapsmall`` and ``abbreviate`` rules are reproduced below, so the
numbers carry the digits R would print).  The pieces are also kept as DataFrames:
``Summary.random``, ``Summary.fixed``, ``Summary.resid_quantiles``, ``Summary.corr_fixef``.

Our fits carry no data-set name, so the ``   Data:`` line is printed only when one is
given (``Summary(fit, data_name="sleepstudy")`` or an attribute ``fit.data_name``).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

WIDTH = 80          # getOption("width")
DIGITS = 4          # lme4: max(3, getOption("digits") - 3)
COR_MAX = 12        # getOption("lme4.summary.cor.max")

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


# ============================================================== formula deparse

_TOKEN = re.compile(r"\s*(`[^`]*`|%[^%]*%|\|\||&&|==|!=|<=|>=|[~|&+\-*/:^(),<>!=]|"
                    r"[A-Za-z_.][A-Za-z0-9_.]*|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|\"[^\"]*\"|'[^']*')")

# binary operators: (precedence, right-assoc, spaced)
_BINARY = {"~": (1, False, True), "||": (2, False, True), "|": (2, False, True),
           "&&": (3, False, True), "&": (3, False, True),
           "==": (5, False, True), "!=": (5, False, True), "<": (5, False, True),
           ">": (5, False, True), "<=": (5, False, True), ">=": (5, False, True),
           "+": (6, False, True), "-": (6, False, True), "*": (7, False, True),
           "/": (7, False, False), ":": (9, False, False), "^": (11, True, False)}
_SPECIAL_PREC = 8    # %op%
_UNARY_PREC = 10


def _tokens(s: str):
    pos, out = 0, []
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot tokenise formula at {s[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, toks):
        self.t, self.i = toks, 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self):
        self.i += 1
        return self.t[self.i - 1]

    def expr(self, minp=0):
        tok = self.peek()
        if tok in ("-", "+", "~", "!"):
            self.take()
            p = 1 if tok == "~" else (4 if tok == "!" else _UNARY_PREC)
            left = ("unary", tok, self.expr(p))
        else:
            left = self.atom()
        while True:
            op = self.peek()
            if op is None:
                break
            if op in _BINARY:
                p, rassoc, _ = _BINARY[op]
            elif op.startswith("%"):
                p, rassoc = _SPECIAL_PREC, False
            else:
                break
            if p < minp or (p == minp and not rassoc):
                break
            self.take()
            right = self.expr(p if rassoc else p + 1) if not rassoc else self.expr(p)
            left = ("bin", op, left, right)
        return left

    def atom(self):
        tok = self.take()
        if tok == "(":
            e = self.expr(0)
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return ("paren", e)
        if self.peek() == "(":
            self.take()
            args = []
            if self.peek() != ")":
                while True:
                    args.append(self.expr(0))
                    nxt = self.take()
                    if nxt == ")":
                        break
                    if nxt != ",":
                        raise ValueError("bad call")
            else:
                self.take()
            return ("call", tok, args)
        return ("sym", tok)


class _Deparser:
    """R's deparse2buff for formulas: spaced binary operators, line breaks past the cutoff."""

    def __init__(self, cutoff=60):
        self.cutoff, self.lines, self.buf, self.indent = cutoff, [], "", 0
        self.start = True

    def put(self, s):
        if self.start:
            self.start = False
            self.buf += "".join("    " if i <= 4 else "  " for i in range(1, self.indent + 1))
        self.buf += s

    def writeline(self):
        self.lines.append(self.buf)
        self.buf, self.start = "", True

    def linebreak(self, state):
        if len(self.buf) > self.cutoff:
            if not state[0]:
                state[0] = True
                self.indent += 1
            self.writeline()

    def dep(self, e):
        kind = e[0]
        if kind == "sym":
            self.put(e[1])
        elif kind == "paren":
            self.put("(")
            self.dep(e[1])
            self.put(")")
        elif kind == "unary":
            self.put(e[1])
            self.dep(e[2])
        elif kind == "call":
            self.put(e[1] + "(")
            state = [False]
            for k, a in enumerate(e[2]):
                if k:
                    self.put(", ")
                    self.linebreak(state)
                self.dep(a)
            if state[0]:
                self.indent -= 1
            self.put(")")
        else:
            op = e[1]
            spaced = _BINARY[op][2] if op in _BINARY else True
            self.dep(e[2])
            if spaced:
                state = [False]
                self.put(f" {op} ")
                self.linebreak(state)
                self.dep(e[3])
                if state[0]:
                    self.indent -= 1
            else:
                self.put(op)
                self.dep(e[3])

    def run(self, e):
        self.dep(e)
        self.writeline()
        return self.lines


def _flatten_sum(e):
    if e[0] == "bin" and e[1] == "+":
        return _flatten_sum(e[2]) + _flatten_sum(e[3])
    return [e]


def _expand_double_verts(e):
    """lme4's ``expandDoubleVerts``: ``(a + b || g)`` -> ``((1 | g) + (0 + a | g) + (0 + b | g))``."""
    kind = e[0]
    if kind == "bin" and e[1] == "||":
        terms = _flatten_sum(e[2])
        intercept = True
        labels = []
        for t in terms:
            if t == ("sym", "1"):
                continue
            if t in (("sym", "0"), ("unary", "-", ("sym", "1"))):
                intercept = False
                continue
            labels.append(t)
        new = ([("bin", "|", ("sym", "1"), e[3])] if intercept else []) + \
              [("bin", "|", ("bin", "+", ("sym", "0"), t), e[3]) for t in labels]
        out = ("paren", new[0])
        for n in new[1:]:
            out = ("bin", "+", out, ("paren", n))
        return out
    if kind == "paren":
        return ("paren", _expand_double_verts(e[1]))
    if kind == "bin":
        return ("bin", e[1], _expand_double_verts(e[2]), _expand_double_verts(e[3]))
    return e


def deparse_formula(formula: str, cutoff: int = 60, expand_double_verts: bool = True) -> list[str]:
    """The lines R's ``deparse()`` gives for a formula (normalised spacing, breaks at 60);
    double bars are expanded as lme4 stores them in the call."""
    try:
        toks = _tokens(formula)
        p = _Parser(toks)
        e = p.expr(0)
        if p.peek() is not None:
            raise ValueError("trailing tokens")
        return _Deparser(cutoff).run(_expand_double_verts(e) if expand_double_verts else e)
    except (ValueError, IndexError, KeyError):
        return [" ".join(formula.split())]


def deparse1(formula: str) -> str:
    """R's ``deparse1``: the deparsed formula on one line."""
    return " ".join(deparse_formula(formula, cutoff=500))


# ============================================================== pieces of the summary


def _title(fit) -> str:
    mtit = "Linear mixed model fit by REML" if fit.reml else \
        "Linear mixed model fit by maximum likelihood "
    return f"{mtit} ['lmerMod']"


def _data_name(fit, data_name):
    return data_name if data_name is not None else getattr(fit, "data_name", None)


def _call_lines(fit, data_name) -> list[str]:
    lines = cat_fill(["Formula:"] + deparse_formula(fit.formula))
    dn = _data_name(fit, data_name)
    if dn:
        lines += cat_fill(["   Data:", str(dn)])
    d = fit.design   # issue 13: lme4 names the weights and the offset= argument
    if getattr(d, "weights", None) is not None:
        lines += cat_fill(["Weights:", d.weights_name or "<array>"])
    if getattr(d, "offset_arg", None):
        lines += cat_fill([" Offset:", d.offset_arg])
    return lines


def _aictab(fit, digits: int) -> list[str]:
    if fit.reml:
        v = float(r_round(fit.reml_criterion, digits))
        return cat_fill(["REML criterion at convergence:", f"{v:.7g}"])
    vals = r_round([fit.aic, fit.bic, fit.loglik, fit.deviance, fit.df_resid], digits)
    f = format_real(vals)
    f[-1] = format_real([vals[-1]])[0]
    return print_named(["AIC", "BIC", "logLik", "deviance", "df.resid"], f)


def _ranef_blocks(fit):
    """(group label, coef names, std devs, correlation matrix) per term, then the residual."""
    out = []
    for name, C in fit.cov_re.items():
        m = C.to_numpy()
        sd = np.sqrt(np.clip(np.diag(m), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = m / np.outer(sd, sd)
        np.fill_diagonal(cor, 1.0)
        out.append((name, list(C.index), sd, cor))
    return out


def format_vc(fit, digits: int = DIGITS, comp=("Variance", "Std.Dev.")) -> list[str]:
    """lme4's ``formatVC`` + print: the random-effects table lines."""
    blocks = _ranef_blocks(fit)
    groups, names, sds = [], [], []
    for name, cn, sd, _ in blocks:
        for k, c in enumerate(cn):
            groups.append(name if k == 0 else "")
            names.append(c)
            sds.append(sd[k])
    groups.append("Residual")
    names.append("")
    sds.append(fit.sigma)
    sds = np.asarray(sds, dtype=float)
    cols = ["Groups", "Name"]
    data = [groups, names]
    if "Variance" in comp:
        cols.append("Variance")
        data.append(format_real(sds ** 2, digits))
    if "Std.Dev." in comp:
        cols.append("Std.Dev.")
        data.append(format_real(sds, digits))
    maxlen = max(len(b[1]) for b in blocks) if blocks else 1
    if maxlen > 1:
        dig = max(2, digits - 2)
        corr_rows = []
        for _, cn, _, cor in blocks:
            q = len(cn)
            rc = r_round(cor, dig)
            cc = np.array(format_real(rc.ravel(), 7, nsmall=dig), dtype=object).reshape(q, q)
            for i in range(q):
                row = [cc[i, j] if j < i else "" for j in range(q)] + [""] * (maxlen - q)
                corr_rows.append(row[:maxlen - 1])
        corr_rows.append([""] * (maxlen - 1))
        for j in range(maxlen - 1):
            cols.append("Corr" if j == 0 else "")
            data.append([r[j] for r in corr_rows])
    cells = list(zip(*data))
    return print_matrix(cells, [""] * len(cells), cols, right=False)


def _groups_line(fit) -> list[str]:
    grp = "; ".join(f"{k}, {v}" for k, v in fit.n_groups.items())
    lines = cat_fill([f"Number of obs: {fit.n_obs}, groups: ", grp])
    if getattr(fit, "n_dropped", 0):
        # as R's summary.lm: rows with missing values are counted, never silently dropped
        lines.append(f"({fit.n_dropped} observation{'s' if fit.n_dropped != 1 else ''} "
                     "deleted due to missingness)")
    return lines


def _fixef_table(fit, digits: int = DIGITS):
    """``printCoefmat`` of Estimate / Std. Error / t value (lme4's summary)."""
    est = fit.fixef.to_numpy(dtype=float)
    se = fit.stderr.to_numpy(dtype=float)
    tv = fit.tvalues.to_numpy(dtype=float)
    p = len(est)
    coef_se = np.column_stack([est, se])
    acs = np.abs(coef_se)
    acs_ok = acs[np.isfinite(acs) & (acs != 0)]
    if acs_ok.size:
        digmin = 1 + np.floor(np.log10([acs_ok.min(), acs_ok.max()]))
    else:
        digmin = np.array([1.0])
    rd = max(1, int(np.max(digits - digmin)))
    cs = np.array(format_real(r_round(coef_se, rd).ravel(order="F"), digits),
                  dtype=object).reshape(2, p).T
    dig_tst = max(1, min(5, digits - 1))
    ts = format_real(r_round(tv, dig_tst), digits)
    # entries printed as zero that are not zero get digits - 1 significant digits
    for i in range(p):
        for j in range(2):
            if coef_se[i, j] != 0 and np.isfinite(coef_se[i, j]) and float(cs[i, j]) == 0:
                cs[i, j] = format_real([coef_se[i, j]], max(1, digits - 1))[0]
    cells = [[cs[i, 0], cs[i, 1], ts[i]] for i in range(p)]
    return print_matrix(cells, list(fit.fixef.index), ["Estimate", "Std. Error", "t value"],
                        right=True)


def _corr_fixef_lines(fit) -> list[str]:
    rn = list(fit.fixef.index)
    p = len(rn)
    C = fit.corr_fixef.to_numpy()
    f = np.array(format_real(r_round(C, 3).ravel(), 7, nsmall=3), dtype=object).reshape(p, p)
    rows = abbreviate(rn, 11)
    cols = abbreviate(rn, 6)
    cells = [[f[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return print_matrix(cells, rows[1:], cols[:-1], right=False)


def _warning_lines(fit, summary: bool) -> list[str]:
    msgs = []
    for w in fit.warnings:
        msgs.append("boundary (singular) fit: see help('isSingular')"
                    if w.startswith("boundary (singular) fit") else w)
    if not msgs:
        return []
    conv = 0 if fit.converged else 1
    head = f"optimizer ({getattr(fit.optsum, 'method', 'pylmem')}) convergence code: {conv} " \
           f"({'OK' if conv == 0 else 'failed'})"
    if summary:
        return [f"{head} ; 0 optimizer warnings; {len(msgs)} lme4 warnings"]
    return [head] + msgs + [""]


def _fit_msgs(fit) -> list[str]:
    dropped = getattr(fit.design, "dropped_columns", []) or []
    if not dropped:
        return []
    k = len(dropped)
    s = "s" if k > 1 else ""
    return ["fit warnings:",
            f"fixed-effect model matrix is rank deficient so dropping {k} column{s} / coefficient{s}"]


# ============================================================== public API


def short_repr(fit, data_name=None) -> str:
    """lme4's ``print(fit)``: criterion, random-effect standard deviations, fixed effects."""
    lines = [_title(fit)]
    lines += _call_lines(fit, data_name)
    lines += _aictab(fit, 4)
    lines.append("Random effects:")
    lines += format_vc(fit, DIGITS, comp=("Std.Dev.",))
    lines += _groups_line(fit)
    fe = fit.fixef
    if len(fe):
        lines.append("Fixed Effects:")
        lines += print_named(list(fe.index), format_real(fe.to_numpy(dtype=float), DIGITS), gap=2)
    else:
        lines.append("No fixed effect coefficients")
    lines += _fit_msgs(fit)
    lines += _warning_lines(fit, summary=True)
    return "\n".join(lines)


class Summary:
    """lme4's ``summary(lmer(...))``; ``str()`` prints it in lme4's layout.

    Attributes (DataFrames): ``random`` (lme4's ``as.data.frame(VarCorr)``),
    ``fixed`` (Estimate, Std. Error, t value), ``resid_quantiles`` (scaled residuals
    Min/1Q/Median/3Q/Max), ``corr_fixef``; ``criteria`` a Series (AIC, BIC, logLik,
    deviance, df.resid, or the REML criterion).
    """

    def __init__(self, fit, data_name=None, digits: int = DIGITS, ddf=None):
        self.fit = fit
        self.data_name = data_name
        self.digits = digits
        self.random = fit.varcorr
        self.fixed = pd.DataFrame({"Estimate": fit.fixef, "Std. Error": fit.stderr,
                                   "t value": fit.tvalues})
        self.ddf = None
        if ddf is not None:  # issue 11: lmerTest's layout (df and p-values)
            from .inference import coef_table, normalize_ddf

            self.ddf = normalize_ddf(ddf)
            self.fixed = coef_table(fit, ddf=self.ddf)
        r = fit.residuals_of("pearson", scaled=True).to_numpy(dtype=float)  # √w e / σ, lme4
        self.scaled_residuals = r
        self.resid_quantiles = pd.Series(np.quantile(r[~np.isnan(r)], [0, .25, .5, .75, 1]),
                                         index=["Min", "1Q", "Median", "3Q", "Max"],
                                         name="Scaled residuals")
        self.corr_fixef = fit.corr_fixef
        if fit.reml:
            self.criteria = pd.Series({"REML": fit.reml_criterion})
        else:
            self.criteria = pd.Series({"AIC": fit.aic, "BIC": fit.bic, "logLik": fit.loglik,
                                       "deviance": fit.deviance, "df.resid": fit.df_resid})

    def lines(self) -> list[str]:
        fit, digits = self.fit, self.digits
        out = [_title(fit)]
        if self.ddf is not None:  # issue 11: lmerTest's title names the df method
            from .inference import lmertest_title

            out = [lmertest_title(fit, self.ddf)]
        out += _call_lines(fit, self.data_name)
        out.append("")
        out += _aictab(fit, 1)
        out.append("")
        out.append("Scaled residuals:")
        rq = zapsmall(self.resid_quantiles.to_numpy(), digits + 1)
        out += print_named(list(self.resid_quantiles.index), format_real(rq, digits))
        out.append("")
        out.append("Random effects:")
        out += format_vc(fit, digits)
        out += _groups_line(fit)
        p = len(fit.fixef)
        if p > 0:
            out.append("")
            out.append("Fixed effects:")
            if self.ddf is not None:
                from .inference import format_coef_table

                out += format_coef_table(self.fixed, digits)
            else:
                out += _fixef_table(fit, digits)
            if p > COR_MAX:
                out += ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}.",
                        "Use print(...., correlation=TRUE)  or",
                        "    vcov(....)        if you need it", ""]
            elif p > 1:
                out.append("")
                out.append("Correlation of Fixed Effects:")
                out += _corr_fixef_lines(fit)
        out += _fit_msgs(fit)
        out += _warning_lines(fit, summary=False)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))
