"""Parse lme4 formulas: ``y ~ fixed + (expr | g) + (expr || g/h)``.

The fixed part is handed to formulaic after translating R idioms
(``I(x^2)`` -> ``I(x**2)``, ``factor(x)`` -> ``C(x)``); the random part is a list of
:class:`RandomSpec`, one per ``(expr | g)`` bar, with nesting ``a/b`` expanded as lme4
does to ``(expr | a) + (expr | b:a)``.  Uncorrelated bars ``||`` are kept as one spec
flagged ``correlated=False``; the design splits them by term.  lme4 2.0's covariance
structures around a bar, ``us(x | g)``, ``diag(...)``, ``cs(...)``, ``ar1(...)`` with
lme4 2.0's ``hom =`` argument (glmmTMB's ``homcs``/``homdiag``/``hetar1`` spellings, and
``hcs``/``har1`` for the heterogeneous forms), set the spec's ``structure``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_FACTOR_CALL = re.compile(r"\b(?:as\.)?factor\(")
_POWER_IN_I = re.compile(r"\^")


@dataclass(frozen=True)
class RandomSpec:
    """One random-effects bar: ``expr`` varies by the levels of ``group``.

    ``group`` is a tuple of column names; more than one means the interaction
    ``a:b`` (levels are the observed combinations).  ``name`` is lme4's label.
    """

    expr: str
    group: tuple[str, ...]
    correlated: bool = True
    structure: str = "us"     # covariance structure: us, diag, cs, hcs, ar1, har1

    @property
    def name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class ParsedFormula:
    """A split lme4 formula."""

    formula: str
    response: str
    fixed: str  # right-hand side of the fixed part, formulaic syntax
    random: tuple[RandomSpec, ...] = field(default_factory=tuple)
    renames: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def fixed_formula(self) -> str:
        return f"{self.response} ~ {self.fixed}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split ``s`` at ``sep`` where parentheses are balanced."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in formula: {s!r}")
        elif depth == 0 and s.startswith(sep, i):
            out.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in formula: {s!r}")
    out.append(s[start:])
    return out


def split_sum(rhs: str) -> list[tuple[str, str]]:
    """Split a right-hand side into (sign, term) at top-level + and -."""
    terms, depth, start, sign = [], 0, 0, "+"
    for i, c in enumerate(rhs):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c in "+-":
            piece = rhs[start:i].strip()
            if piece:
                terms.append((sign, piece))
            sign, start = c, i + 1
    piece = rhs[start:].strip()
    if piece:
        terms.append((sign, piece))
    return terms


def translate_r(expr: str) -> tuple[str, list[tuple[str, str]]]:
    """Translate R formula idioms for formulaic; return the text and name renames.

    ``I(x^2)`` becomes ``I(x**2)`` (formulaic names it ``I(x ** 2)``, renamed back to
    R's ``I(x^2)``); ``factor(x)``/``as.factor(x)`` become ``C(x)``.
    """
    renames: list[tuple[str, str]] = []
    out, i = [], 0
    while i < len(expr):
        m = re.compile(r"\bI\(").search(expr, i)
        if not m:
            out.append(expr[i:])
            break
        out.append(expr[i : m.start()])
        depth, j = 0, m.end() - 1
        while j < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[j], 0)
            if depth == 0:
                break
            j += 1
        inner = expr[m.end() : j]
        new_inner = _POWER_IN_I.sub("**", inner)
        out.append(f"I({new_inner})")
        formulaic_name = "I(" + re.sub(r"\s*\*\*\s*", " ** ", new_inner.strip()) + ")"
        if new_inner != inner:
            renames.append((formulaic_name, f"I({inner.strip()})"))
        i = j + 1
    text = "".join(out)
    for m in _FACTOR_CALL.finditer(text):
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        arg = text[m.end() : j].strip()
        renames.append((f"C({arg})", f"{m.group(0)}{arg})"))
    text = _FACTOR_CALL.sub("C(", text)
    return text, renames


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\u29da\u29db]")


def clean_message(msg: str) -> str:
    """One line, without terminal colour codes or formulaic's ⧛…⧚ highlight markers."""
    return " ".join(_ANSI.sub("", str(msg)).split())


def _unquote(name: str) -> str:
    """```my g``` -> ``my g`` (R's backticked names)."""
    name = name.strip()
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "`" else name


_BACKTICKED = re.compile(r"`[^`]*`")


def _check_expression(expr: str, where: str) -> None:
    """Reject what would be evaluated as Python rather than a model term."""
    bare = _BACKTICKED.sub("``", expr)
    if "[" in bare or "]" in bare:
        raise ValueError(f"{where} '{expr.strip()}' uses indexing with [...], which is not supported in "
                         "a formula: use a column of the data (backticks for odd names: `x[1]`)")


def _expand_group(g: str) -> list[tuple[str, ...]]:
    """``a`` -> [(a,)], ``a:b`` -> [(a, b)], ``a/b`` -> [(a,), (b, a)] as lme4 names them."""
    g = g.strip()
    if g.startswith("(") and g.endswith(")"):
        g = g[1:-1].strip()
    if "/" in g:
        parts = [p.strip() for p in g.split("/")]
        out, acc = [], []
        for p in parts:
            acc = [*p.split(":"), *acc]
            out.append(tuple(_unquote(x) for x in acc))
        return out
    return [tuple(_unquote(x) for x in g.split(":"))]


# lme4 2.0's (and glmmTMB's) covariance-structure keywords around a bar -> pylmem's name.
# As lme4 2.0 (and glmmTMB): diag() and cs() have a variance per column unless hom = TRUE,
# ar1() one variance unless hom = FALSE; homcs/homdiag/hetar1 are glmmTMB's spellings, hcs
# and har1 explicit heterogeneous ones
STRUCTURE_KEYWORDS = {"us": "us", "diag": "diag", "homdiag": "homdiag", "cs": "hcs",
                      "hcs": "hcs", "homcs": "cs", "ar1": "ar1", "har1": "har1", "hetar1": "har1"}
_CALL = re.compile(r"^([A-Za-z_.][A-Za-z0-9_.]*)\s*\((.*)\)$", re.DOTALL)
_FIXED_CALLS = {"I", "C", "factor", "as.factor", "offset", "poly", "log", "exp", "sqrt", "scale",
                "ns", "bs", "abs"}


def _structure_call(term: str):
    """``diag(x | g)`` -> ("diag", "(x | g)"); None for a term that is not one; ValueError
    for an unknown keyword around a bar or a bad ``hom =`` argument."""
    m = _CALL.match(term.strip())
    if not m:
        return None
    word, inner = m.group(1), m.group(2)
    args = _split_top(inner, ",")
    if len(_split_top(args[0], "|")) < 2:
        return None
    if word not in STRUCTURE_KEYWORDS:
        if word in _FIXED_CALLS:
            return None
        raise ValueError(f"unknown covariance structure {word!r} in {term.strip()!r} (known: "
                         f"{', '.join(sorted(STRUCTURE_KEYWORDS))})")
    kind = STRUCTURE_KEYWORDS[word]
    for a in args[1:]:
        key, _, val = a.partition("=")
        key, val = key.strip(), val.strip()
        if key != "hom" or val not in ("TRUE", "FALSE", "T", "F"):
            raise ValueError(f"covariance structure {word}() takes only 'hom = TRUE/FALSE' after "
                             f"the bar, got {a.strip()!r} in {term.strip()!r}")
        hom = val in ("TRUE", "T")
        if kind in ("cs", "hcs"):
            kind = "cs" if hom else "hcs"
        elif kind in ("ar1", "har1"):
            kind = "ar1" if hom else "har1"
        elif kind in ("diag", "homdiag"):
            kind = "homdiag" if hom else "diag"
        else:
            raise ValueError(f"'hom =' applies to diag(), cs() and ar1() only, not {word}()")
    return kind, "(" + args[0].strip() + ")", word


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed right-hand side and random bars."""
    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"formula must be a string 'response ~ terms', got {formula!r}")
    sides = _split_top(formula, "~")
    if len(sides) != 2 or not sides[0].strip():
        raise ValueError(f"formula needs exactly one response before '~': {formula!r}")
    response, rhs = _unquote(sides[0]), sides[1].strip()
    if sides[0].strip() == response and re.search(r"[()\[\]+*/^~|]", response):
        raise ValueError(f"the response {response!r} must be a column of the data: transformations "
                         "such as log(y) are not supported in the formula (add a column, e.g. "
                         "data['log_y'] = np.log(data['y']), and use it)")
    fixed_terms: list[str] = []
    random: list[RandomSpec] = []
    for sign, term in split_sum(rhs):
        structure, word = "us", ""
        call = _structure_call(term)
        if call is not None:
            structure, term, word = call
        inner = term[1:-1] if term.startswith("(") and term.endswith(")") else None
        if inner is not None and len(_split_top(inner, "|")) > 1:
            if sign == "-":
                raise ValueError(f"random-effects term cannot be subtracted: {term!r}")
            double = len(_split_top(inner, "||")) == 2
            if double and structure != "us":
                raise ValueError(f"a covariance structure takes a single bar: write "
                                 f"{word}({inner.replace('||', '|')}), not '||' inside it")
            parts = _split_top(inner, "||") if double else _split_top(inner, "|")
            if len(parts) != 2 or not parts[1].strip():
                raise ValueError(f"random-effects term {term!r} needs a grouping factor after '|'")
            expr = parts[0].strip() or "1"
            _check_expression(expr, "random-effects term")
            for grp in _expand_group(parts[1]):
                if not all(grp):
                    raise ValueError(f"random-effects term {term!r} has an empty grouping factor")
                random.append(RandomSpec(expr=expr, group=grp, correlated=not double,
                                         structure=structure))
        else:
            fixed_terms.append(term if sign == "+" else f"- {term}")
    fixed = " + ".join(fixed_terms).replace("+ -", "-") if fixed_terms else "1"
    if fixed.startswith("- "):
        fixed = "1 " + fixed
    _check_expression(fixed, "the fixed part")
    fixed, renames = translate_r(fixed)
    return ParsedFormula(formula=formula, response=response.strip(), fixed=fixed,
                         random=tuple(random), renames=tuple(renames))


_LEVEL = re.compile(r"^(.*)\[(?:T\.)?(.*)\]$")


def r_column_name(name: str, order_text: str, renames=()) -> str:
    """Convert a formulaic column name to R's: ``gender[T.Male]:week`` -> ``genderMale:week``.

    Factors in an interaction are ordered by their first appearance in ``order_text``
    (R orders the variables of a term as they appear in the formula).
    """
    if name == "Intercept":
        return "(Intercept)"
    pieces = _split_top(name, ":")

    def base(piece: str) -> str:
        m = _LEVEL.match(piece)
        return m.group(1) if m else piece

    def position(piece: str) -> int:
        pos = order_text.find(base(piece))
        return pos if pos >= 0 else len(order_text)

    pieces = sorted(pieces, key=position)
    out = []
    for piece in pieces:
        m = _LEVEL.match(piece)
        b, lvl = (m.group(1), m.group(2)) if m else (piece, "")
        for old, new in renames:
            if b == old:
                b = new
        out.append(b + lvl)
    return ":".join(out)
