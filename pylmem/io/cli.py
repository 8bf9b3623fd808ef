"""The ``pylmem`` command: fit a linear mixed model, or compare nested models, from a shell.

::

    pylmem fit DATA "FORMULA" [--ml|--reml] [--method profiled|em] [--factor COL]...
               [--json] [--plot DIR] [--verbose|--quiet]
    pylmem anova DATA "FORMULA" [--type 1|3] [--ddf satterthwaite|kenward-roger] [--json]
    pylmem anova DATA "F0" "F1" [...] [--reml] [--factor COL]... [--json]

``DATA`` is read by :func:`pylmem.io.readers.read_table` (CSV with its separator sniffed,
``.tsv``, gzipped, Parquet, Feather, a glob; ``-`` reads stdin) or, when no such file
exists, names a bundled data set (``ratWeight``, ``sleepstudy``, ...).  With one formula
``anova`` prints lmerTest's F table; with several, lme4's likelihood-ratio table.
The columns are used as they are: a formula may use ``I(week^2)``, or the file may carry
a ``week2`` column.  ``--factor COL`` treats a numeric-looking column as categorical.

Errors are reported as one line ``pylmem: error: <reason>`` on stderr with exit status 2;
warnings of the fits as ``pylmem: warning: <message>``.  Also runnable as ``python -m pylmem``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import datasets
from .._version import __version__
from ..api.lmer import lmer
from ..inference.lrt import anova
from ..model.formula import clean_message
from ..reports.plots import plot_all
from .cli_dask import cli_fit
from .readers import read_table

__all__ = ["main", "load_data", "fit_to_dict"]

_PROG = "pylmem"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line error format (argparse's own prints usage first)."""

    def error(self, message):  # noqa: D401 - argparse API
        raise CLIError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------- data


def load_data(spec: str) -> pd.DataFrame:
    """Read ``spec`` with :func:`pylmem.io.readers.read_table` (CSV with its separator
    sniffed, TSV, gzipped, Parquet, Feather, a glob, ``-`` for stdin), or load the bundled
    data set of that name when no such file exists."""
    import glob

    if spec == "-" or os.path.exists(spec) or glob.has_magic(spec):
        try:
            return read_table(spec)
        except (ValueError, ImportError) as e:
            raise CLIError(_one_line(e)) from None
        except Exception as e:  # pyarrow's errors: not a Parquet/Arrow file, ...
            raise CLIError(f"cannot read {spec!r}: {_one_line(e)}") from None
    names = datasets.names()
    match = [n for n in names if n.lower() == spec.lower()]
    if match:
        return datasets.load(match[0])
    raise CLIError(f"no such file: {spec!r} (nor a bundled data set: {', '.join(names)})")


def data_name(spec: str) -> str:
    """The name the summary's ``Data:`` line shows for ``spec`` (the bundled name, or the
    path as given; ``-`` is stdin)."""
    if spec == "-":
        return "stdin"
    if not os.path.exists(spec):
        match = [n for n in datasets.names() if n.lower() == spec.lower()]
        if match:
            return match[0]
    return spec


# --------------------------------------------------------------------------- JSON


def _clean(x):
    """JSON-safe: numpy scalars to Python, NaN/inf to None, containers recursively."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, pd.Series):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return str(x)


def fit_to_dict(fit, *, data: str | None = None) -> dict:
    """A fit's results as a JSON-ready dict (names as lme4 prints them, NaN -> None)."""
    out = {
        "formula": fit.formula,
        "data": data,
        "reml": fit.reml,
        "method": fit.method,
        "n_obs": fit.n_obs,
        "n_dropped": fit.n_dropped,
        "groups": dict(fit.n_groups),
        "fixef": fit.fixef,
        "stderr": fit.stderr,
        "cov_re": {name: {"names": list(C.index), "matrix": C.to_numpy()}
                   for name, C in fit.cov_re.items()},
        "sigma2": fit.sigma2,
        "sigma": fit.sigma,
        "loglik": fit.loglik,
        "aic": fit.aic,
        "bic": fit.bic,
        "deviance": fit.deviance,
        "reml_criterion": fit.reml_criterion,
        "df_resid": fit.df_resid,
        "n_params": fit.n_params,
        "converged": fit.converged,
        "singular": fit.is_singular,
        "n_iter": fit.n_iter,
        "warnings": list(fit.warnings),
        "fit_seconds": fit.fit_seconds,
    }
    st = [(t.name, t.structure) for t in fit.design.terms if getattr(t, "structure", "us") != "us"]
    if st:   # covariance structures (docs/structures.md): term -> structure
        out["cov_structures"] = dict(st)
    if fit.design.weights is not None:
        out["weights"] = fit.design.weights_name or "<array>"
    if fit.design.offset_exprs:
        out["offset"] = list(fit.design.offset_exprs)
    return _clean(out)


def _dumps(obj) -> str:
    """Indented JSON, with lists of numbers (and matrix rows) kept on one line."""

    def enc(x, ind):
        pad, pad1 = "  " * ind, "  " * (ind + 1)
        if isinstance(x, dict):
            if not x:
                return "{}"
            items = [f"{pad1}{json.dumps(k)}: {enc(v, ind + 1)}" for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(x, list):
            if all(not isinstance(v, (dict, list)) for v in x):
                return json.dumps(x, allow_nan=False)
            return "[\n" + ",\n".join(pad1 + enc(v, ind + 1) for v in x) + "\n" + pad + "]"
        return json.dumps(x, allow_nan=False)

    return enc(_clean(obj), 0)


def _table_to_records(table) -> list:
    """Rows of an anova table (DataFrame-like) as a list of dicts with the model's name."""
    df = table if isinstance(table, pd.DataFrame) else None
    if df is None:
        for attr in ("to_frame", "frame", "table", "df"):
            v = getattr(table, attr, None)
            v = v() if callable(v) else v
            if isinstance(v, pd.DataFrame):
                df = v
                break
    if df is None:
        df = pd.DataFrame(table)
    rows = []
    for name, rec_in in zip(df.index, df.to_dict(orient="records")):
        rec = {"model": str(name)}
        for k, v in rec_in.items():
            v = _clean(v)
            if str(k) in ("npar", "Df", "Chi Df") and isinstance(v, float) and v.is_integer():
                v = int(v)
            rec[str(k)] = v
        rows.append(rec)
    return rows


# --------------------------------------------------------------------------- helpers


def _one_line(e: BaseException) -> str:
    msg = clean_message(str(e))
    if isinstance(e, KeyError) and msg.startswith("'") and msg.endswith("'"):
        msg = f"unknown column {msg}"
    if not msg:
        msg = type(e).__name__
    return msg


# developer-facing categories, not shown to a command-line user
_DEV_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


class _Warnings:
    """Collect the warnings of a block; print each once as 'pylmem: warning: ...'."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self._seen: set = set()

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._list = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        self.flush()
        return False

    def flush(self):
        for w in self._list:
            if issubclass(w.category, _DEV_WARNINGS):
                continue
            msg = " ".join(str(w.message).split())
            if msg in self._seen:
                continue
            self._seen.add(msg)
            if not self.quiet:
                print(f"{_PROG}: warning: {msg}", file=sys.stderr)
        self._list.clear()


def _fit(formula, data, *, reml, method, factors, verbose, quiet, weights=None, offset=None):
    with _Warnings(quiet=quiet):
        return lmer(formula, data, reml=reml, method=method, factors=list(factors),
                    verbose=verbose, weights=weights, offset=offset)


def _verbosity(args):
    if args.quiet:
        return False
    if args.verbose:
        return True
    return None


# --------------------------------------------------------------------------- commands


def _cmd_fit(args) -> int:
    method = args.method
    reml = args.reml
    if reml is None:
        # lme4's default is REML; the EM algorithm maximises the likelihood
        reml = method != "em"
    elif reml and method == "em":
        raise CLIError("--method em fits by maximum likelihood: use --ml (or leave it out)")
    if getattr(args, "family", "gaussian") != "gaussian":
        return _cmd_glmer(args)
    if args.dask is not None:       # fit where the data live (pylmem.scaleout)
        return cli_fit(args, reml=reml, warnings_block=_Warnings, to_dict=fit_to_dict,
                       dumps=_dumps, error=CLIError)
    data = load_data(args.data)
    fit = _fit(args.formula, data, reml=reml, method=method, factors=args.factor,
               verbose=_verbosity(args), quiet=args.quiet, weights=args.weights,
               offset=args.offset)
    fit.data_name = data_name(args.data)      # the summary's "Data:" line
    plots = []
    if args.plot:
        with _Warnings(quiet=args.quiet):
            plots = [str(p) for p in plot_all(fit, args.plot)]
    ddf = getattr(args, "ddf", None)  # --ddf satterthwaite|kenward-roger
    if args.json:
        out = fit_to_dict(fit, data=args.data)
        if args.plot:
            out["plots"] = plots
        if ddf:
            with _Warnings(quiet=args.quiet):
                ct = fit.coef_table(ddf=ddf)
            out["ddf_method"] = "Satterthwaite" if ddf == "satterthwaite" else "Kenward-Roger"
            out["df"] = _clean(ct["df"])
            out["p_values"] = _clean(ct["Pr(>|t|)"])
        print(_dumps(out))
    elif ddf:
        with _Warnings(quiet=args.quiet):
            print(str(fit.summary(ddf=ddf)))
    else:
        print(str(fit.summary()))
        if plots and not args.quiet:
            print(f"{_PROG}: wrote {len(plots)} plots to {args.plot}", file=sys.stderr)
    return 0


def glmer_to_dict(fit, *, data: str | None = None) -> dict:
    """A GLMM fit's results as a JSON-ready dict."""
    return _clean({
        "formula": fit.formula, "data": data, "family": fit.family.name,
        "link": fit.family.link.name, "nagq": fit.nagq, "n_obs": fit.n_obs,
        "n_dropped": fit.n_dropped, "groups": dict(fit.n_groups), "fixef": fit.fixef,
        "stderr": fit.stderr, "z_values": fit.zvalues, "p_values": fit.pvalues,
        "theta": fit.theta,
        "cov_re": {name: {"names": list(C.index), "matrix": C.to_numpy()}
                   for name, C in fit.cov_re.items()},
        "loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic, "deviance": fit.deviance,
        "df_resid": fit.df_resid, "n_params": fit.n_params, "converged": fit.converged,
        "singular": fit.is_singular, "overdispersion": fit.overdispersion(),
        "warnings": list(fit.warnings), "fit_seconds": fit.fit_seconds})


def _cmd_glmer(args) -> int:
    """``pylmem fit DATA FORMULA --family binomial|poisson [--link L] [--nagq N]``."""
    from ..api.glmer import glmer

    if args.dask is not None:
        raise CLIError("--family: GLMMs run in memory; leave out --dask")
    if args.method != "profiled" or args.reml or args.ddf:
        raise CLIError("--family fits a GLMM by maximum likelihood: --method em, --reml and "
                       "--ddf apply to linear mixed models")
    data = load_data(args.data)
    with _Warnings(quiet=args.quiet):
        fit = glmer(args.formula, data, family=args.family, link=args.link, nagq=args.nagq,
                    weights=args.weights, offset=args.offset, factors=list(args.factor),
                    data_name=Path(args.data).stem if args.data else None)
    if args.json:
        print(_dumps(glmer_to_dict(fit, data=args.data)))
    else:
        print(str(fit.summary()))
    return 0


def _cmd_anova(args) -> int:
    type_, ddf = getattr(args, "type", None), getattr(args, "ddf", None)
    if len(args.formulas) == 1:     # lmerTest's F tests of one model's fixed-effects terms
        return _cmd_ftests(args, type_ or "3", ddf or "satterthwaite")
    if type_ is not None or ddf is not None:
        raise CLIError("--type and --ddf are for the F tests of one model (give one FORMULA); "
                       "two or more formulas are compared by likelihood-ratio tests")
    data = load_data(args.data)
    reml = bool(args.reml)          # the LRT compares ML fits (REML fits are refitted)
    fits = [_fit(f, data, reml=reml, method="profiled", factors=args.factor,
                 verbose=_verbosity(args), quiet=args.quiet) for f in args.formulas]
    names = [f"m{i}" for i in range(len(fits))]
    with _Warnings(quiet=args.quiet):     # lme4's refit note, once, on stderr
        table = anova(*fits, names=names, data_name=data_name(args.data))
    if args.json:
        formulas = getattr(table, "formulas", None) or {n: f.formula for n, f in zip(names, fits)}
        out = {"data": args.data,
               "refitted": bool(getattr(table, "refitted", False)),
               "models": [{"name": n, "formula": f} for n, f in formulas.items()],
               "table": _table_to_records(table)}
        print(_dumps(out))
    else:
        print(str(table))
    return 0


_TYPES = {"1": 1, "I": 1, "3": 3, "III": 3}


def _cmd_ftests(args, type_, ddf) -> int:
    """``pylmem anova DATA FORMULA``: lmerTest's type I/III F table of one (REML) fit."""
    data = load_data(args.data)
    reml = True if args.reml is None else bool(args.reml)   # lmerTest's F tests: REML fit
    fit = _fit(args.formulas[0], data, reml=reml, method="profiled", factors=args.factor,
               verbose=_verbosity(args), quiet=args.quiet)
    with _Warnings(quiet=args.quiet):
        table = fit.anova(type=_TYPES[type_], ddf=ddf)
    if args.json:
        out = {"data": args.data, "formula": fit.formula, "reml": fit.reml,
               "type": _TYPES[type_],
               "ddf_method": "Satterthwaite" if ddf == "satterthwaite" else "Kenward-Roger",
               "table": [dict(r, term=r.pop("model")) for r in _table_to_records(table)]}
        print(_dumps(out))
    else:
        print(str(table))
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    bundled = ", ".join(datasets.names())
    p = _Parser(prog=_PROG, description="Linear mixed-effects models with lme4 formulas.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=f"DATA: a CSV, TSV, Parquet or Feather file (or a glob of them), '-' "
                       f"for stdin, or a bundled data set ({bundled}).\n\n"
                       "examples:\n"
                       "  pylmem fit sleepstudy 'Reaction ~ Days + (Days | Subject)'\n"
                       "  pylmem anova cake 'angle ~ recipe*temperature + (1|recipe:replicate)' "
                       "--factor temperature\n"
                       "  pylmem fit --help; pylmem anova --help")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sp):
        sp.add_argument("--factor", action="append", default=[], metavar="COL",
                        help="treat numeric-looking column COL as categorical (repeatable)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        v = sp.add_mutually_exclusive_group()
        v.add_argument("--verbose", action="store_true",
                       help="always show the progress line on stderr")
        v.add_argument("--quiet", action="store_true",
                       help="no progress line and no warning lines (warnings stay in --json)")

    f = sub.add_parser("fit", help="fit one model and print lme4's summary (or JSON)",
                       description="Fit a linear mixed model and print lme4's summary.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"DATA: a CSV, TSV, Parquet or Feather file (or a glob of them), "
                              f"'-' for stdin, or a bundled data set ({bundled}).\n\n"
                              "examples:\n"
                              "  pylmem fit sleepstudy 'Reaction ~ Days + (Days | Subject)'\n"
                              "  pylmem fit ratWeight 'weight ~ week + I(week^2) + (week + I(week^2) | id)' --ml\n"
                              "  pylmem fit ratWeight 'weight ~ week + (week | id)' --method em --plot plots/\n"
                              "  pylmem fit cake 'angle ~ recipe*temperature + (1|recipe:replicate)' "
                              "--factor temperature --ddf satterthwaite\n"
                              "  pylmem fit data.csv 'y ~ x + (x | g)' --weights w --json\n"
                              "  pylmem fit 'data/*.parquet' 'y ~ x + (x | g)' --ml --dask")
    f.add_argument("data", metavar="DATA")
    f.add_argument("formula", metavar="FORMULA", help="lme4 formula, e.g. 'y ~ x + (x | g)'")
    crit = f.add_mutually_exclusive_group()
    crit.add_argument("--ml", dest="reml", action="store_false", default=None,
                      help="maximum likelihood (default for --method em)")
    crit.add_argument("--reml", dest="reml", action="store_true", default=None,
                      help="restricted maximum likelihood (default for --method profiled)")
    f.add_argument("--method", choices=("profiled", "em"), default="profiled",
                   help="profiled deviance (lme4's algorithm, default) or the EM algorithm")
    f.add_argument("--plot", metavar="DIR", help="write diagnostic plots (PNG) to DIR")
    f.add_argument("--ddf", choices=("satterthwaite", "kenward-roger"), default=None,
                   help="t tests with Satterthwaite's or Kenward-Roger's df (lmerTest's summary)")
    f.add_argument("--weights", metavar="COL", help="prior weights column (variance σ²/w)")
    f.add_argument("--offset", metavar="COL", help="offset column (added to the linear predictor)")
    f.add_argument("--family", choices=("gaussian", "binomial", "poisson"), default="gaussian",
                   help="response family: binomial or poisson fit a GLMM (glmer)")
    f.add_argument("--link", default=None, help="GLMM link (binomial: logit, probit, cloglog)")
    f.add_argument("--nagq", type=int, default=1, metavar="N",
                   help="GLMM: 1 Laplace (default), 0 fast, >1 adaptive Gauss-Hermite points")
    f.add_argument("--dask", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="fit on Dask: DATA a Parquet/CSV file, directory or glob; ADDRESS a "
                        "dask.distributed scheduler (default: a LocalCluster)")
    common(f)
    f.set_defaults(func=_cmd_fit)

    a = sub.add_parser("anova", help="F tests of one model, or likelihood-ratio tests of nested models",
                       description="With one FORMULA: lmerTest's F tests of its fixed-effects\n"
                                   "terms (REML fit, type III, Satterthwaite's df by default).\n"
                                   "With two or more: fit each by ML and print lme4's\n"
                                   "likelihood-ratio table.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"DATA: a CSV, TSV, Parquet or Feather file (or a glob of them), "
                              f"'-' for stdin, or a bundled data set ({bundled}).\n\n"
                              "examples:\n"
                              "  pylmem anova cake 'angle ~ recipe*temperature + (1|recipe:replicate)' "
                              "--factor temperature --type 3 --ddf satterthwaite\n"
                              "  pylmem anova sleepstudy 'Reaction ~ 1 + (Days | Subject)' "
                              "'Reaction ~ Days + (Days | Subject)'\n"
                              "  pylmem anova data.csv 'y ~ 1 + (1 | g)' 'y ~ x + (1 | g)' --json")
    a.add_argument("data", metavar="DATA")
    a.add_argument("formulas", metavar="FORMULA", nargs="+",
                   help="one model (F tests) or two or more nested models (LRT)")
    crit = a.add_mutually_exclusive_group()
    crit.add_argument("--reml", dest="reml", action="store_true", default=None,
                      help="fit by REML (the default for the F tests of one model; the LRT "
                           "refits REML fits by ML)")
    crit.add_argument("--ml", dest="reml", action="store_false", default=None,
                      help="fit by maximum likelihood (the default for the LRT)")
    a.add_argument("--type", choices=("1", "3", "I", "III"), default=None,
                   help="F tests of one model: type I (sequential) or III (marginal, default)")
    a.add_argument("--ddf", choices=("satterthwaite", "kenward-roger"), default=None,
                   help="F tests of one model: Satterthwaite's (default) or Kenward-Roger's df")
    common(a)
    a.set_defaults(func=_cmd_anova)
    return p


def main(argv=None) -> int:
    """Entry point of the ``pylmem`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return args.func(args)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except CLIError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a failing fit: one line, no traceback
        if os.environ.get("PYLMEM_TRACEBACK"):
            raise
        msg = _one_line(e)
        if not isinstance(e, (ValueError, KeyError, OSError)):
            msg = f"{type(e).__name__}: {msg}"
        print(f"{_PROG}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
