# Reference values for pylmem's glmer: lme4 glmer fits (Laplace, nAGQ = 0, adaptive Gauss-Hermite),
# the marginal log-likelihood by numerical integration, lme4's post-fit accessors, anova/drop1/confint
# for cbpp, optional glmmTMB cross-checks and lme4's fit times.
# Run from the repository root:  Rscript tests/reference/make_glmer_refs.R
# Writes tests/reference/glmer_data/*.csv and tests/reference/glmer_refs.json (tests never need R).
# The schema is described in tests/reference/GLMER_REFS.md.
suppressMessages({library(lme4); library(jsonlite)})
options(warn = 1)
has_tmb <- suppressWarnings(suppressMessages(requireNamespace("glmmTMB", quietly = TRUE)))
ref <- "tests/reference"; dd <- file.path(ref, "glmer_data")
dir.create(dd, showWarnings = FALSE, recursive = TRUE)

## ---------------------------------------------------------------- data, written to round-trip exactly
datasets <- list()
fmt_col <- function(x) {
  if (is.factor(x) || is.character(x)) return(as.character(x))
  x <- as.numeric(x)
  if (all(x == round(x)) && all(abs(x) < 2^52)) return(sprintf("%.0f", x))
  sprintf("%.17g", x)
}
read_exact <- function(path, levels) {
  hdr <- strsplit(readLines(path, n = 1), ",")[[1]]
  cls <- setNames(ifelse(hdr %in% names(levels), "character", "numeric"), hdr)
  d <- read.csv(path, colClasses = cls)
  for (v in names(levels)) d[[v]] <- factor(d[[v]], levels = levels[[v]])
  d
}
write_exact <- function(d, name, source) {
  path <- file.path(dd, paste0(name, ".csv"))
  out <- as.data.frame(lapply(d, fmt_col), stringsAsFactors = FALSE)
  write.table(out, path, sep = ",", quote = FALSE, row.names = FALSE)
  levels <- lapply(Filter(is.factor, d), levels)
  back <- read_exact(path, levels)
  stopifnot(identical(dim(back), dim(d)))
  for (v in names(d)) {
    a <- d[[v]]; b <- back[[v]]
    if (is.factor(a)) stopifnot(identical(levels(a), levels(b)), identical(as.character(a), as.character(b)))
    else stopifnot(identical(as.numeric(a), as.numeric(b)))
  }
  datasets[[name]] <<- list(file = paste0("glmer_data/", name, ".csv"), n_rows = nrow(d),
    columns = names(d), factors = levels, source = source)
  back
}

data(cbpp, package = "lme4"); data(grouseticks, package = "lme4"); data(VerbAgg, package = "lme4")
D <- list()
D$cbpp <- write_exact(cbpp[, c("herd", "incidence", "size", "period")], "cbpp", "lme4::cbpp")
gt <- grouseticks[, c("INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION")]
gt$cHEIGHT <- as.numeric(scale(gt$HEIGHT))   # standardized HEIGHT: (HEIGHT - mean) / sd
D$grouseticks <- write_exact(gt, "grouseticks",
  "lme4::grouseticks; cHEIGHT = as.numeric(scale(HEIGHT)) (overrides lme4's centred cHEIGHT)")
va <- VerbAgg[, c("id", "item", "Anger", "Gender", "btype", "situ", "mode")]
va$r2 <- as.integer(VerbAgg$r2 == "Y")
D$VerbAgg <- write_exact(va, "VerbAgg", "lme4::VerbAgg; r2 = 1 for 'Y', 0 for 'N'")

set.seed(20261201)
## random slope: 60 groups x 20, beta = (-0.5, 1), sd = (1, 0.5), cor = 0.3
G <- 60; n <- 20
g <- factor(sprintf("g%02d", rep(seq_len(G), each = n)))
x <- round(rnorm(G * n), 3)
S <- matrix(c(1, 0.3 * 0.5, 0.3 * 0.5, 0.25), 2)
b <- matrix(rnorm(2 * G), G) %*% chol(S)
y <- rbinom(G * n, 1, plogis(-0.5 + x + b[g, 1] + b[g, 2] * x))
D$sim_slope <- write_exact(data.frame(g = g, x = x, y = y), "sim_slope",
  "simulated: 60 groups x 20, logit(p) = -0.5 + x + b0 + b1 x, sd(b0) = 1, sd(b1) = 0.5, cor = 0.3")
## Poisson with exposure: 40 groups x 15, log mu = log t + 0.2 + 0.5 x + b, sd(b) = 0.7
G <- 40; n <- 15
g <- factor(sprintf("p%02d", rep(seq_len(G), each = n)))
x <- round(runif(G * n, -1, 1), 3); t <- round(runif(G * n, 0.5, 5), 2)
y <- rpois(G * n, t * exp(0.2 + 0.5 * x + rnorm(G, sd = 0.7)[g]))
D$sim_offset <- write_exact(data.frame(g = g, x = x, t = t, y = y), "sim_offset",
  "simulated: 40 groups x 15, log(mu) = log(t) + 0.2 + 0.5 x + b, sd(b) = 0.7")
## binary, one scalar term, small clusters: 50 groups x 10, beta = (0.3, 0.8), sd(b) = 1.5
G <- 50; n <- 10
g <- factor(sprintf("c%02d", rep(seq_len(G), each = n)))
x <- round(rnorm(G * n), 3)
y <- rbinom(G * n, 1, plogis(0.3 + 0.8 * x + rnorm(G, sd = 1.5)[g]))
D$sim_binary <- write_exact(data.frame(g = g, x = x, y = y), "sim_binary",
  "simulated: 50 groups x 10, logit(p) = 0.3 + 0.8 x + b, sd(b) = 1.5")
## nested: 20 a x 4 b (b labelled 1..4 within every a) x 8, sd(a) = 1, sd(a:b) = 0.6
set.seed(20261202)
A <- 20; B <- 4; n <- 8
a <- factor(sprintf("A%02d", rep(seq_len(A), each = B * n)))
bb <- factor(rep(rep(seq_len(B), each = n), A))
x <- round(rnorm(A * B * n), 3)
ab <- interaction(a, bb, drop = TRUE)
ua <- rnorm(A, sd = 1); uab <- rnorm(nlevels(ab), sd = 0.6)
y <- rbinom(A * B * n, 1, plogis(-0.2 + 0.7 * x + ua[a] + uab[ab]))
D$sim_nested <- write_exact(data.frame(a = a, b = bb, x = x, y = y), "sim_nested",
  "simulated: 20 a x 4 b (b coded 1..4 within a) x 8, logit(p) = -0.2 + 0.7 x + u_a + u_ab, sd = 1, 0.6")

## ---------------------------------------------------------------- cases
fams <- list(binomial = binomial, poisson = poisson)
cs <- function(name, data, formula, family, link, nagq, weights = NULL, note = NULL)
  list(name = name, data = data, formula = formula, family = family, link = link, nagq = nagq,
       weights = weights, note = note)
cb <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
cases <- list(
  cs("cbpp_laplace", "cbpp", cb, "binomial", "logit", 1),
  cs("cbpp_nagq0", "cbpp", cb, "binomial", "logit", 0),
  cs("cbpp_agq9", "cbpp", cb, "binomial", "logit", 9),
  cs("cbpp_agq25", "cbpp", cb, "binomial", "logit", 25),
  cs("cbpp_prop_laplace", "cbpp", "incidence/size ~ period + (1 | herd)", "binomial", "logit", 1,
     weights = "size", note = "same model as cbpp_laplace, response as proportions with prior weights size"),
  cs("cbpp_probit", "cbpp", cb, "binomial", "probit", 1),
  cs("cbpp_cloglog", "cbpp", cb, "binomial", "cloglog", 1),
  cs("grouseticks_crossed", "grouseticks",
     "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson", "log", 1,
     note = "lme4 doc's TICKS ~ YEAR + scale(HEIGHT) + ...; cHEIGHT is scale(HEIGHT) stored in the CSV"),
  cs("grouseticks_loc_laplace", "grouseticks", "TICKS ~ YEAR + cHEIGHT + (1 | LOCATION)", "poisson", "log", 1),
  cs("grouseticks_loc_agq9", "grouseticks", "TICKS ~ YEAR + cHEIGHT + (1 | LOCATION)", "poisson", "log", 9),
  cs("verbagg_laplace", "VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
     "binomial", "logit", 1),
  cs("verbagg_nagq0", "VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
     "binomial", "logit", 0),
  cs("sim_slope_laplace", "sim_slope", "y ~ x + (x | g)", "binomial", "logit", 1),
  cs("sim_offset_laplace", "sim_offset", "y ~ x + offset(log(t)) + (1 | g)", "poisson", "log", 1),
  cs("sim_offset_agq9", "sim_offset", "y ~ x + offset(log(t)) + (1 | g)", "poisson", "log", 9),
  cs("sim_binary_laplace", "sim_binary", "y ~ x + (1 | g)", "binomial", "logit", 1),
  cs("sim_binary_agq5", "sim_binary", "y ~ x + (1 | g)", "binomial", "logit", 5),
  cs("sim_binary_agq15", "sim_binary", "y ~ x + (1 | g)", "binomial", "logit", 15),
  cs("sim_nested_laplace", "sim_nested", "y ~ x + (1 | a/b)", "binomial", "logit", 1))

# tolPwrss = 1e-14: at lme4's 1e-12 (and at its default 1e-7) PIRLS stops one step early and lme4's Laplace
# deviance comes from the weights of the previous iterate, an error of up to a few 1e-6 in logLik even
# though the modes agree to 1e-12; one more step (1e-14) removes it. 1e-12 is the fallback if 1e-14 fails.
mk_control <- function(o, tol) switch(o,
  bobyqa = glmerControl(optimizer = "bobyqa", tolPwrss = tol, optCtrl = list(maxfun = 1e5, rhoend = 1e-10)),
  Nelder_Mead = glmerControl(optimizer = "Nelder_Mead", tolPwrss = tol,
                             optCtrl = list(maxfun = 1e5, FtolAbs = 1e-12, FtolRel = 1e-15, XtolRel = 1e-12)),
  nloptwrap = glmerControl(optimizer = "nloptwrap", tolPwrss = tol,
                           optCtrl = list(algorithm = "NLOPT_LN_BOBYQA", xtol_rel = 1e-12, ftol_abs = 1e-12,
                                          maxeval = 1e5)))
optimizers <- c("bobyqa", "Nelder_Mead", "nloptwrap")

catch <- function(expr) {
  w <- character(0)
  v <- withCallingHandlers(tryCatch(expr, error = function(e) structure(list(msg = conditionMessage(e)), class = "fitError")),
    warning = function(e) { w <<- c(w, trimws(conditionMessage(e))); invokeRestart("muffleWarning") },
    message = function(e) { w <<- c(w, trimws(conditionMessage(e))); invokeRestart("muffleMessage") })
  list(value = v, warnings = I(w))
}
gfit <- function(s, ctrl = NULL) {
  d <- D[[s$data]]; fam <- fams[[s$family]](link = s$link); f <- as.formula(s$formula)
  W <- if (is.null(s$weights)) NULL else d[[s$weights]]
  if (is.null(ctrl)) glmer(f, data = d, family = fam, nAGQ = s$nagq, weights = W)
  else glmer(f, data = d, family = fam, nAGQ = s$nagq, weights = W, control = ctrl)
}

## ---------------------------------------------------------------- integration (one scalar term)
# log p(y | eta) per observation with every constant (binomial coefficient, log y!)
cond_logp <- function(fam, y, eta, wts) {
  mu <- fam$linkinv(eta)
  if (fam$family == "binomial") dbinom(round(wts * y), round(wts), mu, log = TRUE)
  else dpois(y, mu, log = TRUE)
}
# the marginal log-likelihood of a one-scalar-term model at (beta, theta), canonical links only:
# exact (integrate() and a 200-node adaptive Gauss-Hermite rule), and lme4's AGQ rule for k nodes,
# all with every constant.  u = b / theta ~ N(0, 1).
# u = b / theta ~ N(0, 1). At the conditional mode (Newton on the exact score), h_exp is lme4's curvature
# (IRLS weights, the expected information) and h_obs the observed one (equal for canonical links).
# agq<k>: lme4's AGQ rule with k nodes (GHrule(k), scale 1 / sqrt(h_exp)); laplace_observed_info: the
# Laplace approximation with h_obs (glmmTMB's); exact_*: integrate() and a 200-node adaptive GH rule.
marginal <- function(fit, beta = fixef(fit), theta = getME(fit, "theta"), ks = integer(0)) {
  fam <- family(fit); stopifnot(length(theta) == 1)
  y <- fit@resp$y; wts <- fit@resp$weights
  eta0 <- as.numeric(getME(fit, "X") %*% beta) + fit@resp$offset
  gi <- getME(fit, "flist")[[1]]
  logf <- function(u, i) sum(cond_logp(fam, y[i], eta0[i] + theta * u, wts[i])) + dnorm(u, log = TRUE)
  score <- function(u, i) { eta <- eta0[i] + theta * u; mu <- fam$linkinv(eta)
    theta * sum(wts[i] * (y[i] - mu) * fam$mu.eta(eta) / fam$variance(mu)) - u }
  h_exp <- function(u, i) { eta <- eta0[i] + theta * u
    theta^2 * sum(wts[i] * fam$mu.eta(eta)^2 / fam$variance(fam$linkinv(eta))) + 1 }
  h_obs <- function(u, i) { d <- 1e-4
    (-score(u + 2 * d, i) + 8 * score(u + d, i) - 8 * score(u - d, i) + score(u - 2 * d, i)) / (-12 * d) }
  canonical <- fam$link %in% c("logit", "log") && fam$family %in% c("binomial", "poisson")
  gh200 <- gh_rule(200); rules <- lapply(ks, GHrule)
  out <- list(exact_integrate = 0, exact_gh200 = 0, laplace_observed_info = 0)
  for (k in ks) out[[paste0("agq", k)]] <- 0
  modes <- setNames(numeric(nlevels(gi)), levels(gi))
  for (j in levels(gi)) {
    i <- which(gi == j); u <- 0
    for (it in 1:200) {   # Newton (Fisher scoring for non-canonical links) for the conditional mode
      st <- score(u, i) / h_exp(u, i); u <- u + st
      if (abs(st) < 1e-14) break
    }
    he <- h_exp(u, i); ho <- if (canonical) he else h_obs(u, i)
    l0 <- logf(u, i); modes[j] <- u
    lg <- function(r, h) { s <- 1 / sqrt(h)
      l0 + log(s) + log(sum(r[, "w"] * exp(vapply(u + s * r[, "z"], logf, 0, i = i) - l0) / exp(r[, "ldnorm"]))) }
    s <- 1 / sqrt(ho)
    g <- function(z) exp(vapply(u + s * z, logf, 0, i = i) - l0)
    I <- integrate(g, -Inf, Inf, rel.tol = 1e-12, subdivisions = 2000L)$value
    out$exact_integrate <- out$exact_integrate + l0 + log(s) + log(I)
    out$exact_gh200 <- out$exact_gh200 + lg(gh200, ho)
    out$laplace_observed_info <- out$laplace_observed_info + l0 + 0.5 * log(2 * pi / ho)
    for (m in seq_along(ks)) out[[paste0("agq", ks[m])]] <- out[[paste0("agq", ks[m])]] + lg(rules[[m]], he)
  }
  out$max_abs_mode_diff_lme4 <- max(abs(modes - as.numeric(getME(fit, "u"))))
  out
}
# exact marginal log-likelihood of the nested (1 | a/b) binomial model by nested integrate()
marginal_nested <- function(fit) {
  fam <- family(fit); y <- fit@resp$y; wts <- fit@resp$weights
  eta0 <- as.numeric(getME(fit, "X") %*% fixef(fit)) + fit@resp$offset
  th <- getME(fit, "theta"); fl <- getME(fit, "flist")
  ab <- fl[["b:a"]]; a <- fl[["a"]]; tha <- th[["a.(Intercept)"]]; thab <- th[["b:a.(Intercept)"]]
  tot <- 0
  for (ja in levels(a)) {
    ia <- which(a == ja); cells <- split(ia, droplevels(ab[ia]))
    inner <- function(ua) sum(vapply(cells, function(i) {
      f <- function(v) vapply(v, function(vv) exp(sum(cond_logp(fam, y[i], eta0[i] + tha * ua + thab * vv, wts[i]))), 0) * dnorm(v)
      log(integrate(f, -Inf, Inf, rel.tol = 1e-12)$value) }, 0))
    mx <- optimize(function(ua) inner(ua) + dnorm(ua, log = TRUE), c(-10, 10), maximum = TRUE)$objective
    outer <- function(u) vapply(u, function(uu) exp(inner(uu) + dnorm(uu, log = TRUE) - mx), 0)
    tot <- tot + mx + log(integrate(outer, -Inf, Inf, rel.tol = 1e-10)$value)
  }
  tot
}
# Gauss-Hermite rule for the N(0, 1) density (Golub-Welsch), columns as lme4::GHrule: z, w, ldnorm
gh_rule <- function(n) {
  if (n == 1) return(cbind(z = 0, w = 1, ldnorm = dnorm(0, log = TRUE)))
  J <- matrix(0, n, n); off <- sqrt(seq_len(n - 1)); J[cbind(1:(n - 1), 2:n)] <- off; J[cbind(2:n, 1:(n - 1))] <- off
  e <- eigen(J, symmetric = TRUE); o <- order(e$values)
  z <- e$values[o]; w <- e$vectors[1, o]^2
  cbind(z = z, w = w / sum(w), ldnorm = dnorm(z, log = TRUE))
}
# lme4 keeps the factor L (and ldL2, used in its Laplace deviance and condVar) from the weights of the
# PIRLS iterate before the last one; this is log|L|^2 from the weights at the final (converged) mode
fresh_ldL2 <- function(fit) {
  Lt <- getME(fit, "Lambdat"); Zt <- getME(fit, "Zt"); w <- fit@resp$sqrtWrkWt()^2
  M <- Lt %*% Zt %*% Diagonal(x = w) %*% t(Zt) %*% t(Lt) + Diagonal(nrow(Lt))
  as.numeric(determinant(M, logarithm = TRUE)$modulus)
}
saturated_loglik <- function(fit) {
  fam <- family(fit); y <- fit@resp$y; wts <- fit@resp$weights
  sum(if (fam$family == "binomial") dbinom(round(wts * y), round(wts), y, log = TRUE) else dpois(y, y, log = TRUE))
}

## ---------------------------------------------------------------- extraction
named <- function(x) as.list(setNames(as.numeric(x), names(x)))
head10 <- function(x) I(unname(as.numeric(x))[seq_len(min(10, length(x)))])
rows <- function(m) unname(lapply(seq_len(nrow(m)), function(i) I(as.numeric(m[i, ]))))
tab <- function(x) { x <- as.data.frame(x); list(rows = rownames(x), columns = colnames(x),
  values = setNames(lapply(colnames(x), function(c) I(as.numeric(x[[c]]))), colnames(x))) }
extract <- function(fit, s) {
  vc <- as.data.frame(VarCorr(fit))
  re <- ranef(fit, condVar = TRUE)
  ranefs <- lapply(names(re), function(g) {
    r <- re[[g]]; k <- min(5, nrow(r)); pv <- attr(r, "postVar")
    list(n_levels = nrow(r), levels = rownames(r)[seq_len(k)], columns = colnames(r),
         values = setNames(lapply(colnames(r), function(c) I(r[[c]][seq_len(k)])), colnames(r)),
         condvar = lapply(seq_len(k), function(i) rows(matrix(pv[, , i], dim(pv)[1]))))
  }); names(ranefs) <- names(re)
  rt <- c("deviance", "pearson", "response", "working")
  res <- setNames(lapply(rt, function(t) head10(residuals(fit, type = t))), rt)
  res_ss <- setNames(lapply(rt, function(t) sum(residuals(fit, type = t)^2)), rt)
  V <- as.matrix(vcov(fit)); V0 <- as.matrix(vcov(fit, use.hessian = FALSE))
  ll <- logLik(fit)
  list(n_obs = nobs(fit), n_groups = as.list(ngrps(fit)),
    fixef = named(fixef(fit)), fixef_se = named(sqrt(diag(V))),
    fixef_se_rx = named(sqrt(diag(V0))), vcov = rows(V), vcov_rx = rows(V0),
    theta = named(getME(fit, "theta")),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    loglik = as.numeric(ll), loglik_df = attr(ll, "df"), deviance = deviance(fit),
    minus2loglik = -2 * as.numeric(ll), aic = AIC(fit), bic = BIC(fit), df_resid = df.residual(fit),
    devcomp_cmp = named(getME(fit, "devcomp")$cmp),
    ranef = ranefs, fitted_head10 = head10(fitted(fit)), residuals_head10 = res, residuals_sumsq = res_ss,
    predict_link_head10 = head10(predict(fit, type = "link")),
    predict_response_head10 = head10(predict(fit, type = "response")),
    y_internal_head10 = head10(fit@resp$y), prior_weights_head10 = head10(fit@resp$weights))
}

## ---------------------------------------------------------------- fits
out_cases <- list(); best_ctrl <- list()
for (s in cases) {
  cat(s$name, "...\n")
  opts <- list(); best <- NULL
  for (o in optimizers) {
    tol <- 1e-14; r <- catch(gfit(s, mk_control(o, tol)))
    if (inherits(r$value, "fitError")) { tol <- 1e-12; r <- catch(gfit(s, mk_control(o, tol))) }
    if (inherits(r$value, "fitError")) { opts[[o]] <- list(error = r$value$msg, warnings = r$warnings); next }
    f <- r$value
    opts[[o]] <- list(loglik = as.numeric(logLik(f)), fixef = named(fixef(f)), theta = named(getME(f, "theta")),
                      tolPwrss = tol, warnings = r$warnings)
    if (is.null(best) || logLik(f) > logLik(best)) { best <- f; best_opt <- o; best_tol <- tol }
  }
  # the same optimizer at the brief's tolPwrss = 1e-12, to show the PIRLS early stop
  r12 <- catch(gfit(s, mk_control(best_opt, 1e-12)))
  t0 <- proc.time()[["elapsed"]]; r <- catch(gfit(s)); tdef <- proc.time()[["elapsed"]] - t0
  def <- if (inherits(r$value, "fitError")) list(error = r$value$msg, warnings = r$warnings) else
    list(loglik = as.numeric(logLik(r$value)), fixef = named(fixef(r$value)),
         theta = named(getME(r$value, "theta")), warnings = r$warnings, fit_seconds = tdef)
  e <- c(s[!vapply(s, is.null, TRUE)], extract(best, s))
  e$best_optimizer <- best_opt; e$tolPwrss <- best_tol; e$optimizers <- opts; e$lme4_default <- def
  if (!inherits(r12$value, "fitError")) e$loglik_tolPwrss_1e12 <- as.numeric(logLik(r12$value))
  e$lme4_default_shortfall <- if (is.null(def$loglik)) NULL else e$loglik - def$loglik
  e$saturated_loglik <- saturated_loglik(best)
  e$lme4_loglik <- e$loglik
  e$loglik_full <- if (s$nagq > 1) e$loglik + e$saturated_loglik else e$loglik
  if (s$nagq <= 1) {
    fl <- fresh_ldL2(best); e$ldL2_final_weights <- fl
    e$loglik_laplace_final_weights <- e$loglik + (getME(best, "devcomp")$cmp[["ldL2"]] - fl) / 2
  }
  scalar1 <- length(getME(best, "theta")) == 1
  if (scalar1) {
    ks <- unique(c(1L, max(1L, as.integer(s$nagq))))
    m <- marginal(best, ks = ks)
    e$integration <- c(m, list(
      note = "at this fit's (fixef, theta), all with every constant: exact marginal loglik (integrate(), 200-node adaptive GH), lme4's AGQ rule with k nodes recomputed in R at the converged mode (agq1 = Laplace with lme4's expected-information curvature), Laplace with the observed curvature"))
    k <- max(1L, as.integer(s$nagq))
    e$lme4_loglik_minus_full_agq <- e$loglik - m[[paste0("agq", k)]]
    e$exact_loglik <- m$exact_integrate
  }
  if (s$name == "sim_nested_laplace") e$exact_loglik <- marginal_nested(best)
  if (has_tmb && s$nagq == 1) {
    d <- D[[s$data]]; fam <- fams[[s$family]](link = s$link)
    r <- catch(if (is.null(s$weights)) glmmTMB::glmmTMB(as.formula(s$formula), data = d, family = fam)
               else glmmTMB::glmmTMB(as.formula(s$formula), data = d, family = fam, weights = d[[s$weights]]))
    if (!inherits(r$value, "fitError")) {
      e$glmmTMB_loglik <- as.numeric(logLik(r$value))
      e$glmmTMB_fixef <- named(glmmTMB::fixef(r$value)$cond)
      e$glmmTMB_warnings <- r$warnings
    }
  }
  out_cases[[s$name]] <- e; best_ctrl[[s$name]] <- mk_control(best_opt, best_tol)
  cat("  best", best_opt, "loglik", sprintf("%.12f", e$loglik), "default short",
      format(e$lme4_default_shortfall), if (scalar1) sprintf("lme4-fullAGQ %.10g (+sat %.3g) du %.2g exact %.10f", e$lme4_loglik_minus_full_agq,
      e$lme4_loglik_minus_full_agq + e$saturated_loglik, e$integration$max_abs_mode_diff_lme4, e$exact_loglik), "\n")
}

## ---------------------------------------------------------------- cbpp: anova, drop1, confint, scaled residuals
cbd <- D$cbpp; ctl <- best_ctrl$cbpp_laplace
m1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbd, family = binomial, control = ctl)
m0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), data = cbd, family = binomial, control = ctl)
an <- anova(m0, m1)
dr <- drop1(m1, test = "Chisq")
ci <- confint(m1, method = "Wald")
cbpp_extras <- list(
  note = "cbpp Laplace fits (cbpp_laplace's optimizer); m0 = cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
  m0 = list(loglik = as.numeric(logLik(m0)), fixef = named(fixef(m0)), theta = named(getME(m0, "theta"))),
  anova = tab(an), drop1 = tab(dr),
  confint_wald = list(rows = rownames(ci), lower = I(as.numeric(ci[, 1])), upper = I(as.numeric(ci[, 2])),
                      columns = colnames(ci)),
  scaled_residual_quantiles = named(quantile(residuals(m1, "pearson", scaled = TRUE))))

## ---------------------------------------------------------------- timings (default glmer(), 3 runs)
tm <- function(s) { v <- vapply(1:3, function(i) system.time(gfit(s))[["elapsed"]], 0); list(runs = I(v), median = median(v)) }
cn <- vapply(cases, `[[`, "", "name")
timings <- list(note = "elapsed seconds of glmer() with default control, 3 runs, on a shared 2-core machine",
  cbpp_laplace = tm(cases[[which(cn == "cbpp_laplace")]]),
  verbagg_laplace = tm(cases[[which(cn == "verbagg_laplace")]]))

res <- list(meta = list(lme4_version = as.character(packageVersion("lme4")), R_version = R.version.string,
    glmmTMB_version = if (has_tmb) as.character(packageVersion("glmmTMB")) else NULL,
    date = format(Sys.time(), "%Y-%m-%d"),
    optimizers = paste("each case fitted with bobyqa (rhoend 1e-10), Nelder_Mead (FtolAbs 1e-12, XtolRel 1e-12) and",
      "nloptwrap NLOPT_LN_BOBYQA (xtol_rel = ftol_abs = 1e-12), maxfun 1e5, tolPwrss = 1e-14 (1e-12 where 1e-14",
      "makes PIRLS fail); the highest logLik is kept"),
    notes = I(c(
      "nAGQ <= 1: lme4's logLik includes every constant; it is -devfun/2 with ldL2 from the weights of the PIRLS iterate before the last, so it is off the exact Laplace by up to ~1e-6; loglik_laplace_final_weights is the exact Laplace at lme4's estimate",
      "nAGQ > 1: lme4's logLik omits the saturated log-likelihood: full = loglik + saturated_loglik",
      "non-canonical links (probit, cloglog): lme4's Laplace uses the expected information; the observed-information Laplace (glmmTMB) is ~0.04 higher",
      "deviance() of a glmer fit is the sum of squared deviance residuals (devcomp_cmp.drsum), not -2 logLik",
      "vcov()/fixef_se use the finite-difference Hessian in (theta, beta); fixef_se_rx is the RX-based (conditional on theta) one"))),
  datasets = datasets, cases = out_cases, cbpp_extras = cbpp_extras, timings = timings)
# doubles as "%.17g" (jsonlite's digits = NA keeps only 15 significant digits); I() marks arrays
exact_json <- function(x) {
  if (is.list(x)) return(lapply(x, exact_json))
  if (is.double(x)) {
    v <- ifelse(is.finite(x), sprintf("%.17g", as.numeric(x)), "null")
    if (length(x) == 1 && !inherits(x, "AsIs")) return(structure(v, class = "json"))
    return(structure(paste0("[", paste(v, collapse = ","), "]"), class = "json"))
  }
  x
}
path <- file.path(ref, "glmer_refs.json")
writeLines(toJSON(exact_json(res), auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE, na = "null", null = "null"), path)
back <- fromJSON(path, simplifyVector = FALSE)
stopifnot(identical(back$cases$cbpp_laplace$loglik, out_cases$cbpp_laplace$loglik),
          identical(unlist(back$cases$verbagg_laplace$fixef), unlist(out_cases$verbagg_laplace$fixef)),
          identical(unlist(back$cases$sim_slope_laplace$residuals_head10$working),
                    as.numeric(out_cases$sim_slope_laplace$residuals_head10$working)))
cat("wrote", path, "\n")
