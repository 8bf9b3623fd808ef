# Reference values for pylmem's parametric bootstrap (tests/test_bootstrap.py):
#  * lme4's confint(method = "boot") intervals (percentile) and bootstrap SDs for sleepstudy;
#  * pbkrtest's PBmodcomp for the seed's GMO question (male rats).
# Run from the repository root:  Rscript tests/reference/make_boot_refs.R
# Writes tests/reference/boot_refs.json (seed, nsim and package versions recorded).
suppressMessages({library(lme4); library(pbkrtest); library(jsonlite)})
out <- "tests/reference/boot_refs.json"
res <- list(lme4_version = as.character(packageVersion("lme4")),
            pbkrtest_version = as.character(packageVersion("pbkrtest")),
            R_version = R.version.string)

# ---- sleepstudy, REML: percentile intervals from bootMer, as confint(method = "boot")
sl <- read.csv("pylmem/datasets/data/sleepstudy.csv", stringsAsFactors = TRUE)
fm <- lmer(Reaction ~ Days + (Days | Subject), data = sl)
pfun <- function(x) {
  vc <- as.data.frame(VarCorr(x), order = "lower.tri")
  v <- c(vc$sdcor, fixef(x))
  names(v) <- c(sprintf(".sig%02d", seq_len(nrow(vc) - 1)), ".sigma", names(fixef(x)))
  v
}
nsim <- 2000; seed <- 20261125
t0 <- proc.time()[["elapsed"]]
bb <- bootMer(fm, pfun, nsim = nsim, seed = seed)
secs <- proc.time()[["elapsed"]] - t0
ci <- confint(bb, level = 0.95, type = "perc")
ok <- complete.cases(bb$t)
res$sleepstudy <- list(formula = "Reaction ~ Days + (Days | Subject)", reml = TRUE, nsim = nsim,
  seed = seed, seconds = secs, n_failed = sum(!ok),
  n_singular = sum(bb$t[ok, ".sig03"] < 1e-8 | abs(bb$t[ok, ".sig02"]) > 1 - 1e-8 | bb$t[ok, ".sig01"] < 1e-8),
  names = colnames(bb$t), t0 = unname(bb$t0),
  lower = unname(ci[, 1]), upper = unname(ci[, 2]),
  sd = unname(apply(bb$t, 2, sd, na.rm = TRUE)), mean = unname(colMeans(bb$t, na.rm = TRUE)))
cat("sleepstudy boot:", secs, "s\n")

# ---- the seed's GMO question: males, polynomial growth, ML
rw <- read.csv("pylmem/datasets/data/ratWeight.csv", stringsAsFactors = TRUE)
rw$week2 <- rw$week^2
dm <- rw[rw$gender == "Male", ]
h0 <- lmer(weight ~ week + week2 + (week + week2 | id), data = dm, REML = FALSE)
h1 <- lmer(weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id), data = dm, REML = FALSE)
nsim2 <- 300; seed2 <- 20261126
t0 <- proc.time()[["elapsed"]]
pb <- suppressWarnings(PBmodcomp(h1, h0, nsim = nsim2, seed = seed2))
secs2 <- proc.time()[["elapsed"]] - t0
s <- summary(pb)
res$gmo <- list(nsim = nsim2, seed = seed2, seconds = secs2,
  LRT = s$test["LRT", "stat"], df = s$test["LRT", "df"], p_chisq = s$test["LRT", "p.value"],
  p_PB = s$test["PBtest", "p.value"], p_gamma = s$test["Gamma", "p.value"],
  p_bartlett = s$test["Bartlett", "p.value"], ref_mean = unname(s$moment["mean"]),
  ref_var = unname(s$moment["var"]), npos = unname(s$samples["npos"]))
cat("GMO PBmodcomp:", secs2, "s\n")
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), out)
