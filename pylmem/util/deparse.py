"""R's ``deparse`` of a model formula: how lme4 prints ``Formula:`` lines and anova's model
descriptions (token parser, operator precedence, line breaking at R's cutoff).

Support code: it knows nothing of mixed models.
"""
from __future__ import annotations

import re

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
