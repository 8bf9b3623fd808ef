"""Benchmark pylmem beside lme4 (R), mixedlm and statsmodels MixedLM in one run.

    python benchmarks/compare.py                       # all cases, all installed peers
    python benchmarks/compare.py --quick               # small cases, 2 reps, short limits
    python benchmarks/compare.py --cases sleepstudy_REML,InstEval_ML --reps 3
    python benchmarks/compare.py --out benchmarks/RESULTS.md

Every (case, library) pair runs in its own child process (``--worker`` mode of this
script; ``Rscript benchmarks/lme4_fit.R`` for lme4) under a wall-clock limit, so a slow
peer is reported as ``timeout (>N s)`` instead of stalling the suite.  Inside the child
the fit is run once as a warm-up and then timed ``--reps`` times (best is reported);
interpreter start-up, imports and data loading are never timed.  Timed repetitions stop
early once ``--budget`` seconds have been spent on them; when the warm-up alone took
longer than the budget it is the only timing (marked "1 run").  The objective compared
is the log-likelihood as lme4 reports it (the REML log-likelihood for REML fits).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LIBS = ("pylmem", "lme4", "mixedlm", "statsmodels")
# default wall-clock limit (s) of one child process: warm-up + timed reps + loading
DEFAULT_TIMEOUT = {"pylmem": 900, "lme4": 300, "mixedlm": 300, "statsmodels": 120}
MEMORY_CASE = "sim_1e6_ML"


# ============================================================================ worker side
def _timed_fits(fit_once, reps: int, budget: float):
    """Warm-up, then up to ``reps`` timed fits (stop once ``budget`` s are spent)."""
    t0 = time.perf_counter()
    res = fit_once()
    t_warm = time.perf_counter() - t0
    print(json.dumps({"event": "warmup", "seconds": t_warm}), flush=True)
    if t_warm > budget:
        return res, [t_warm], True
    times, spent = [], 0.0
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        res = fit_once()
        t = time.perf_counter() - t0
        times.append(t)
        spent += t
        if spent > budget:
            break
    return res, times, False


def _worker(lib: str, case_name: str, reps: int, budget: float, memory: bool) -> None:
    import resource

    from cases import CASES, SCALING

    case = CASES[case_name] if case_name in CASES else SCALING[case_name]
    data = case.load()
    caught: list[str] = []

    def recorded(call):
        """Run one fit, keeping its warnings (as text) for the report."""
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            result = call()
        caught.extend(f"{x.category.__name__}: {x.message}" for x in w)
        return result

    extra: dict = {}
    if lib == "pylmem":
        import pylmem

        def fit_once():
            return recorded(lambda: pylmem.lmer(case.formula, data, reml=case.reml))

        if memory:
            import tracemalloc

            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            f = fit_once()
            t = time.perf_counter() - t0
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
            fit_once()
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(json.dumps({"event": "memory", "rss_before_fit_kib": rss0, "rss_peak_kib": rss1,
                              "traced_peak_bytes": traced_peak, "seconds": t,
                              "loglik": float(f.loglik)}), flush=True)
            return
        f, times, warm_only = _timed_fits(fit_once, reps, budget)
        ll = float(f.loglik)
        extra = {"n_evals": int(f.n_iter), "fit_seconds": float(f.fit_seconds),
                 "converged": bool(f.converged)}
    elif lib == "mixedlm":
        import mixedlm

        def fit_once():
            return recorded(lambda: mixedlm.lmer(case.formula, data, REML=case.reml))

        r, times, warm_only = _timed_fits(fit_once, reps, budget)
        ll = float(r.logLik())
    elif lib == "statsmodels":
        import statsmodels.formula.api as smf

        spec = case.statsmodels
        d = data
        groups = spec.get("groups")
        if groups is None:           # crossed effects: one group holding every row
            d = data.assign(_one=1)
            groups = "_one"

        def fit_once():
            return recorded(lambda: smf.mixedlm(
                spec["formula"], d, groups=groups, re_formula=spec.get("re_formula"),
                vc_formula=spec.get("vc_formula")).fit(reml=case.reml))

        r, times, warm_only = _timed_fits(fit_once, reps, budget)
        ll = float(r.llf)
        extra = {"converged": bool(getattr(r, "converged", True))}
    else:
        raise SystemExit(f"unknown worker library {lib!r}")
    # only the warnings of the last fit (they repeat)
    seen, uniq = set(), []
    for m in caught:
        if m not in seen:
            seen.add(m)
            uniq.append(m)
    print(json.dumps({"event": "result", "seconds": times, "loglik": ll, "warmup_only": warm_only,
                      "warnings": uniq[:5], **extra}), flush=True)


# ============================================================================ parent side
def _run_child(cmd, timeout: float, env=None):
    """Run ``cmd``; return (returncode|None on timeout, stdout, stderr, peak RSS in KiB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        rc, maxrss = None, None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                rc, maxrss = os.waitstatus_to_exitcode(status), ru.ru_maxrss
                p.returncode = rc
                break
            if time.monotonic() > deadline:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = -9
                maxrss = ru.ru_maxrss
                break
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        return rc, out.read(), err.read(), maxrss


def _parse_events(stdout: str) -> dict:
    ev = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            ev[d.get("event", "?")] = d
    return ev


def available_peers() -> dict:
    """lib -> None if usable, else the reason it is skipped."""
    import importlib.util

    out = {"pylmem": None}
    if shutil.which("Rscript") is None:
        out["lme4"] = "Rscript not found"
    else:
        r = subprocess.run(["Rscript", "-e", 'quit(status = if (requireNamespace("lme4", quietly = TRUE)) 0 else 3)'],
                           capture_output=True, text=True)
        out["lme4"] = None if r.returncode == 0 else "R package lme4 not installed"
    for lib in ("mixedlm", "statsmodels"):
        out[lib] = None if importlib.util.find_spec(lib) is not None else f"{lib} not installed"
    return out


def versions() -> dict:
    from importlib import metadata

    v = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "pandas", "pylmem", "mixedlm", "statsmodels"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "not installed"
    if shutil.which("Rscript"):
        r = subprocess.run(["Rscript", "-e",
                            'cat(paste(R.version$major, R.version$minor, sep="."), '
                            'tryCatch(as.character(packageVersion("lme4")), error=function(e) "not installed"))'],
                           capture_output=True, text=True)
        parts = r.stdout.split()
        if len(parts) == 2:
            v["R"], v["lme4"] = parts
    return v


def git_state() -> str:
    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "pylmem"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {head}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def run_case(case, libs, skip, args, tmpdir, log) -> list[dict]:
    rows = []
    csv = None
    for lib in libs:
        row = {"case": case.name, "lib": lib}
        rows.append(row)
        if skip.get(lib):
            row["status"] = f"skipped ({skip[lib]})"
            continue
        if lib == "statsmodels" and case.statsmodels is None:
            row["status"] = "n/a (model not expressible)"
            continue
        timeout = args.timeout if (args.timeout and lib != "pylmem") else DEFAULT_TIMEOUT[lib]
        if args.quick and lib != "pylmem":
            timeout = min(timeout, 60)
        if lib == "lme4":
            if csv is None:
                csv = Path(tmpdir) / f"{case.name}.csv"
                from cases import write_csv

                write_csv(case, csv)
            cmd = ["Rscript", str(HERE / "lme4_fit.R"), str(csv), case.formula,
                   "TRUE" if case.reml else "FALSE", str(args.reps), ",".join(case.factors),
                   str(args.budget)]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", lib, "--case", case.name,
                   "--reps", str(args.reps), "--budget", str(args.budget)]
        t0 = time.perf_counter()
        rc, out, err, maxrss = _run_child(cmd, timeout)
        wall = time.perf_counter() - t0
        ev = _parse_events(out)
        row["child_wall"] = wall
        row["maxrss_kib"] = maxrss
        res = ev.get("result")
        if rc is None:
            row["status"] = f"timeout (>{timeout:g} s)"
            if "warmup" in ev:
                row["status"] += f", warm-up took {ev['warmup']['seconds']:.1f} s"
        elif res is None:
            tail = (err.strip().splitlines() or ["no output"])[-1]
            row["status"] = f"failed (rc={rc}): {tail[:200]}"
        else:
            row["status"] = "ok"
            row["times"] = res["seconds"]
            row["seconds"] = min(res["seconds"])
            row["loglik"] = res["loglik"]
            row["warmup_only"] = res.get("warmup_only", False)
            row["warnings"] = res.get("warnings", [])
            for k in ("n_evals", "converged"):
                if k in res:
                    row[k] = res[k]
        log(f"  {lib:12s} {row['status']:>10s}"
            + (f"  {row['seconds']:9.4f} s  logLik {row['loglik']:.10g}" if "seconds" in row else "")
            + f"  (child {wall:.1f} s)")
    return rows


def memory_run(args, log) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "pylmem", "--case", MEMORY_CASE,
           "--memory"]
    rc, out, err, maxrss = _run_child(cmd, DEFAULT_TIMEOUT["pylmem"])
    ev = _parse_events(out).get("memory")
    if ev is None:
        log(f"memory run failed: {(err.strip().splitlines() or ['?'])[-1]}")
        return None
    ev["child_maxrss_kib"] = maxrss
    return ev


# ---------------------------------------------------------------------------- formatting
def _fmt_s(x: float) -> str:
    return f"{x:.4f}" if x < 1 else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def make_table(rows: list[dict]) -> str:
    lines = ["| case | library | seconds | ratio to pylmem | logLik | abs ΔlogLik to best | peak RSS (MiB) | notes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    by_case: dict = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    for case, rs in by_case.items():
        lls = [r["loglik"] for r in rs if r.get("status") == "ok"]
        best = max(lls) if lls else None
        base = next((r["seconds"] for r in rs if r["lib"] == "pylmem" and r.get("status") == "ok"), None)
        for r in rs:
            if r.get("status") != "ok":
                rss = f"{r['maxrss_kib'] / 1024:.0f}" if r.get("maxrss_kib") else ""
                lines.append(f"| {case} | {r['lib']} | {r['status']} |  |  |  | {rss} |  |")
                continue
            notes = []
            if r.get("warmup_only"):
                notes.append("1 run (warm-up exceeded budget)")
            else:
                notes.append(f"best of {len(r['times'])}")
            if "n_evals" in r:
                notes.append(f"{r['n_evals']} evals")
            if r.get("converged") is False:
                notes.append("NOT converged")
            for w in r.get("warnings", [])[:2]:
                notes.append("warn: " + w.replace("|", "/").replace("\n", " ")[:110])
            ratio = f"{r['seconds'] / base:.2f}" if base else ""
            d = best - r["loglik"]
            rel = d / abs(best) if best else 0.0
            dstr = f"{d:.2e}" + (" (!)" if rel > 1e-6 else "")
            lines.append(f"| {case} | {r['lib']} | {_fmt_s(r['seconds'])} | {ratio} | {r['loglik']:.6f} | "
                         f"{dstr} | {r['maxrss_kib'] / 1024:.0f} | {'; '.join(notes)} |")
    return "\n".join(lines)


TARGETS = {"lme4": 10.0, "mixedlm": 2.0}     # pylmem must be at least this many times faster
LOGLIK_RTOL = 1e-6
MEMORY_TARGET_S, MEMORY_TARGET_MIB = 3.0, 1024.0


def check_targets(rows, mem) -> list[str]:
    """Lines saying which of the project's targets are met or missed."""
    out = []
    by_case: dict = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["lib"]] = r
    for case, rs in by_case.items():
        py = rs.get("pylmem")
        if not py or py.get("status") != "ok":
            out.append(f"- MISSED {case}: pylmem {py.get('status') if py else 'not run'}")
            continue
        lls = [r["loglik"] for r in rs.values() if r.get("status") == "ok"]
        rel = (max(lls) - py["loglik"]) / abs(max(lls))
        if rel > LOGLIK_RTOL:
            out.append(f"- MISSED {case}: pylmem logLik {rel:.1e} (relative) below the best")
        for lib, want in TARGETS.items():
            r = rs.get(lib)
            if not r:
                continue
            if r.get("status") == "ok":
                ratio = r["seconds"] / py["seconds"]
                if ratio < want:
                    out.append(f"- MISSED {case}: {lib} seconds / pylmem seconds = {ratio:.2f} (target >= {want:g})")
            elif r.get("status", "").startswith("timeout"):
                pass  # the peer took longer than its limit: the speed target is met
    if MEMORY_CASE in by_case and by_case[MEMORY_CASE].get("pylmem", {}).get("status") == "ok":
        t = by_case[MEMORY_CASE]["pylmem"]["seconds"]
        if t > MEMORY_TARGET_S:
            out.append(f"- MISSED {MEMORY_CASE}: pylmem {t:.2f} s (target <= {MEMORY_TARGET_S:g} s)")
    if mem:
        mib = mem["rss_peak_kib"] / 1024
        if mib >= MEMORY_TARGET_MIB:
            out.append(f"- MISSED {MEMORY_CASE}: pylmem peak RSS {mib:.0f} MiB (target < 1 GiB)")
    return out or ["- all targets met"]


def make_report(rows, mem, meta, args) -> str:
    v = meta["versions"]
    out = ["# pylmem benchmark results", "",
           f"Date: {meta['date']}  ",
           f"Machine: {meta['machine']}  ",
           "Versions: " + ", ".join(f"{k} {v[k]}" for k in
                                    ("python", "numpy", "scipy", "pandas", "pylmem", "R", "lme4",
                                     "mixedlm", "statsmodels") if k in v) + "  ",
           f"pylmem source: {meta.get('git', '?')}  ",
           f"Command: `{meta['command']}` (reps={args.reps}, budget={args.budget:g} s, "
           f"total {meta['total_seconds'] / 60:.1f} min)", "",
           "seconds = best wall time of one fit (formula to fitted model) after a warm-up; ratio = "
           "library seconds / pylmem seconds (> 1: pylmem is faster); abs ΔlogLik = best logLik of the "
           "case - this logLik, '(!)' when it exceeds 1e-6 relative; peak RSS = maximum resident set "
           "of the library's whole child process (interpreter + data + warm-up + reps).", "",
           make_table(rows), ""]
    if mem:
        out += [f"## pylmem peak memory on {MEMORY_CASE}", "",
                "One fit in a fresh process (data simulated in-process, no warm-up):", "",
                f"- peak RSS of the process: **{mem['rss_peak_kib'] / 1024:.0f} MiB**",
                f"- RSS before the fit (interpreter, imports, data): {mem['rss_before_fit_kib'] / 1024:.0f} MiB",
                f"- peak traced by tracemalloc during a second fit: {mem['traced_peak_bytes'] / 2**20:.0f} MiB",
                f"- that fit took {mem['seconds']:.2f} s (cold), logLik {mem['loglik']:.6f}", ""]
    out += ["## Targets", "",
            "pylmem >= 10x faster than lme4 and >= 2x faster than mixedlm on every case, logLik equal to "
            f"the best within {LOGLIK_RTOL:g} relative, {MEMORY_CASE} <= {MEMORY_TARGET_S:g} s and < 1 GiB "
            "peak (a peer that timed out counts as slower).", ""] + check_targets(rows, mem) + [""]
    return "\n".join(out)


def main(argv=None) -> int:
    from cases import CASES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help=f"comma-separated case names (default: all): {', '.join(CASES)}")
    ap.add_argument("--libs", default=",".join(LIBS), help="comma-separated libraries (default: all)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions after the warm-up (default 5)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds of timed repetitions per (case, library) before stopping early (default 20)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="wall-clock limit (s) of each peer's child process "
                         f"(default: {', '.join(f'{k} {v}' for k, v in DEFAULT_TIMEOUT.items() if k != 'pylmem')})")
    ap.add_argument("--quick", action="store_true",
                    help="skip the large cases, 2 reps, 5 s budget, peers limited to 60 s")
    ap.add_argument("--no-memory", action="store_true", help=f"skip the pylmem memory run on {MEMORY_CASE}")
    ap.add_argument("--out", help="write the markdown report here (e.g. benchmarks/RESULTS.md)")
    ap.add_argument("--json", help="also dump the raw rows as JSON here")
    ap.add_argument("--render", metavar="JSON", help="only re-make the report from a --json dump")
    # internal: one fit in a child process
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        _worker(args.worker, args.case, args.reps, args.budget, args.memory)
        return 0

    if args.render:
        dump = json.loads(Path(args.render).read_text())
        meta = dump["meta"]
        args.reps, args.budget = meta.get("reps", args.reps), meta.get("budget", args.budget)
        report = make_report(dump["rows"], dump["memory"], meta, args)
        print(report)
        if args.out:
            Path(args.out).write_text(report)
        return 0

    t_start = time.perf_counter()
    git_start = git_state()
    if args.quick:
        args.reps = min(args.reps, 2)
        args.budget = min(args.budget, 5.0)
    names = args.cases.split(",") if args.cases else [n for n, c in CASES.items()
                                                        if not (args.quick and c.large)]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    libs = [lib for lib in args.libs.split(",") if lib]
    bad = [lib for lib in libs if lib not in LIBS]
    if bad:
        ap.error(f"unknown librar(y/ies) {bad}; known: {', '.join(LIBS)}")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    skip = available_peers()
    for lib, why in skip.items():
        if why and lib in libs:
            log(f"{lib}: skipped ({why})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pylmem-bench-") as tmp:
        for n in names:
            log(f"== {n}: {CASES[n].formula} ({'REML' if CASES[n].reml else 'ML'})")
            rows += run_case(CASES[n], libs, skip, args, tmp, log)
    mem = None
    if not args.no_memory and "pylmem" in libs and (MEMORY_CASE in names):
        log(f"== memory: pylmem on {MEMORY_CASE}")
        mem = memory_run(args, log)
    meta = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
            "versions": versions(), "git": git_start, "reps": args.reps, "budget": args.budget,
            "total_seconds": time.perf_counter() - t_start,
            "command": "python benchmarks/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    git_end = git_state()
    if git_end != git_start:
        meta["git"] += f" at the start; {git_end} at the end (pylmem changed during the run)"
    report = make_report(rows, mem, meta, args)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        log(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory": mem, "meta": meta}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
