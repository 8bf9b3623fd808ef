# Reference values for pylmem's covariance structures: nlme (pdDiag, pdCompSymm = lme4 2.0's
# cs(hom = TRUE)) and glmmTMB (diag, cs: heterogeneous compound symmetry as lme4 2.0's cs(),
# ar1), ML and REML.  Each reference
# is the best of several optimisers (the true optimum, checked by the tests against
# pylmem's own optimum of the same criterion).
# Run from the repository root:  Rscript tests/reference/make_structures_refs.R
# Writes tests/reference/structures_refs.json and the simulated data
# tests/reference/ar1_sim.csv (CI never needs R).
suppressMessages({library(nlme); library(glmmTMB); library(jsonlite)})
dd <- "pylmem/datasets/data/"
sleep <- read.csv(paste0(dd, "sleepstudy.csv")); sleep$Subject <- factor(sleep$Subject)
machines <- read.csv(paste0(dd, "Machines.csv")); machines$Worker <- factor(machines$Worker)
machines$Machine <- factor(machines$Machine)
# AR(1) random effects across 6 occasions, two measurements per occasion (so that the
# white noise is identified), 60 subjects
set.seed(20261201)
ns <- 60; nt <- 6; rho <- 0.6
sim <- expand.grid(rep = 1:2, time = 1:nt, subject = sprintf("s%02d", 1:ns))
Rm <- rho^abs(outer(1:nt, 1:nt, "-"))
B <- matrix(rnorm(ns * nt), ns, nt) %*% chol(1.5^2 * Rm)
sim$x <- round(rnorm(nrow(sim)), 4)
b <- B[cbind(as.integer(factor(sim$subject)), sim$time)]
sim$y <- round(2 + 0.5 * sim$time + 0.3 * sim$x + b + rnorm(nrow(sim), sd = 0.7), 4)
write.csv(sim, "tests/reference/ar1_sim.csv", row.names = FALSE)
sim$subject <- factor(sim$subject); sim$ftime <- factor(sim$time)

best_of <- function(fits, ll) { v <- sapply(fits, function(f) if (inherits(f, "try-error")) -Inf else ll(f))
  list(fit = fits[[which.max(v)]], all = v) }
res <- list()
lme_ref <- function(name, fixed, random, data, reml, pdclass) {
  meth <- if (reml) "REML" else "ML"
  fits <- list(
    try(lme(fixed, random = random, data = data, method = meth,
            control = lmeControl(opt = "nlminb", msMaxIter = 500, tolerance = 1e-10))),
    try(lme(fixed, random = random, data = data, method = meth,
            control = lmeControl(opt = "optim", msMaxIter = 500, tolerance = 1e-10))))
  b <- best_of(fits, function(f) as.numeric(logLik(f)))
  m <- b$fit
  vc <- unclass(getVarCov(m)); attributes(vc) <- list(dim = dim(vc))
  list(engine = "nlme", pd = pdclass, reml = reml, logLik = as.numeric(logLik(m)),
       logLik_all = b$all, fixef = unname(fixef(m)), sigma = m$sigma,
       cov_re = unname(vc), df = attr(logLik(m), "df"), AIC = AIC(m))
}
tmb_ref <- function(name, formula, data, reml) {
  fits <- list(
    try(glmmTMB(formula, data = data, REML = reml)),
    try(glmmTMB(formula, data = data, REML = reml,
                control = glmmTMBControl(optimizer = optim, optArgs = list(method = "BFGS")))))
  b <- best_of(fits, function(f) as.numeric(logLik(f)))
  m <- b$fit
  vc <- VarCorr(m)$cond[[1]]
  list(engine = "glmmTMB", reml = reml, logLik = as.numeric(logLik(m)), logLik_all = b$all,
       fixef = unname(fixef(m)$cond), sigma = sigma(m), cov_re = unname(matrix(vc, nrow(vc))),
       df = attr(logLik(m), "df"), AIC = AIC(m))
}
for (reml in c(FALSE, TRUE)) {
  sfx <- if (reml) "reml" else "ml"
  r <- lme_ref("x", Reaction ~ Days, list(Subject = pdDiag(~Days)), sleep, reml, "pdDiag")
  r$data <- "sleepstudy"; r$formula <- "Reaction ~ Days + diag(Days | Subject)"
  res[[paste0("sleep_pddiag_", sfx)]] <- r
  r <- lme_ref("x", score ~ Machine, list(Worker = pdCompSymm(~ Machine - 1)), machines, reml, "pdCompSymm")
  r$data <- "Machines"; r$formula <- "score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)"
  res[[paste0("machines_pdcompsymm_", sfx)]] <- r
  r <- lme_ref("x", score ~ Machine, list(Worker = pdDiag(~ Machine - 1)), machines, reml, "pdDiag")
  r$data <- "Machines"; r$formula <- "score ~ Machine + diag(0 + Machine | Worker)"
  res[[paste0("machines_pddiag_", sfx)]] <- r
  r <- tmb_ref("x", Reaction ~ Days + diag(Days | Subject), sleep, reml)
  r$data <- "sleepstudy"; r$formula <- "Reaction ~ Days + diag(Days | Subject)"
  res[[paste0("sleep_tmbdiag_", sfx)]] <- r
  r <- tmb_ref("x", score ~ Machine + cs(0 + Machine | Worker), machines, reml)
  r$data <- "Machines"; r$formula <- "score ~ Machine + cs(0 + Machine | Worker)"
  res[[paste0("machines_tmbcs_", sfx)]] <- r
  r <- tmb_ref("x", y ~ time + x + ar1(0 + ftime | subject), sim, reml)
  r$data <- "ar1_sim"; r$formula <- "y ~ time + x + ar1(0 + ftime | subject)"
  res[[paste0("sim_tmbar1_", sfx)]] <- r
  r <- tmb_ref("x", y ~ time + x + cs(0 + ftime | subject), sim, reml)
  r$data <- "ar1_sim"; r$formula <- "y ~ time + x + cs(0 + ftime | subject)"
  res[[paste0("sim_tmbcs_", sfx)]] <- r
  cat(sfx, "done\n")
}
res$provenance <- list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
  glmmTMB = as.character(packageVersion("glmmTMB")), script = "tests/reference/make_structures_refs.R")
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/structures_refs.json")
