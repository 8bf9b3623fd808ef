# Reference values for pylmem's type II F tests and least-squares means: lmerTest's
# anova(type = 2, ddf = "Satterthwaite"/"Kenward-Roger") and ls_means(), with emmeans'
# emmeans(..., pairwise ~ f) as a second opinion.
# Run from the repository root:  Rscript tests/reference/make_type2_lsmeans_refs.R
# Writes tests/reference/type2_lsmeans_refs.json (CI never needs R).
suppressMessages({library(lmerTest); library(pbkrtest); library(emmeans); library(jsonlite)})
dd <- "pylmem/datasets/data/"
rd <- function(f, fac) { d <- read.csv(paste0(dd, f)); for (v in fac) d[[v]] <- factor(d[[v]]); d }
dsets <- list(cake = rd("cake.csv", c("replicate", "recipe", "temperature")),
              ratWeight = rd("ratWeight.csv", c("id", "regime", "gender", "dosage")))
# an empty cell: recipe C never baked at 225 (its interaction column is dropped)
dsets$cake_missing <- droplevels(dsets$cake[!(dsets$cake$recipe == "C" & dsets$cake$temperature == "225"), ])
models <- list(
  list(name = "cake_reml", data = "cake", reml = TRUE, factors = c("temperature"),
       formula = "angle ~ recipe*temperature + (1|recipe:replicate)",
       lsm = c("recipe", "temperature", "recipe:temperature")),
  list(name = "cake_ml", data = "cake", reml = FALSE, factors = c("temperature"),
       formula = "angle ~ recipe*temperature + (1|recipe:replicate)", lsm = c("recipe")),
  list(name = "cake_additive_reml", data = "cake", reml = TRUE, factors = c("temperature"),
       formula = "angle ~ recipe + temperature + (1|recipe:replicate)", lsm = c("recipe", "temperature")),
  list(name = "cake_missing_reml", data = "cake_missing", reml = TRUE, factors = c("temperature"),
       formula = "angle ~ recipe*temperature + (1|recipe:replicate)",
       lsm = c("recipe", "recipe:temperature")),
  list(name = "rat_gender_reml", data = "ratWeight", reml = TRUE, factors = character(0),
       formula = "weight ~ gender*week + (week|id)", lsm = c("gender")),
  list(name = "rat_mixed_reml", data = "ratWeight", reml = TRUE, factors = character(0),
       formula = "weight ~ regime*gender + gender*week + (week|id)",
       lsm = c("regime", "gender", "regime:gender")),
  list(name = "rat_poly_ml", data = "ratWeight", reml = FALSE, factors = character(0),
       formula = "weight ~ gender*(week + I(week^2)) + (week|id)", lsm = c("gender")))
tab <- function(x) { x <- as.data.frame(x); list(rows = rownames(x), columns = colnames(x),
  values = unname(lapply(colnames(x), function(c)
    if (is.numeric(x[[c]])) as.numeric(x[[c]]) else as.character(x[[c]])))) }
res <- list()
for (s in models) {
  d <- dsets[[s$data]]
  # several optimizers, the best criterion kept: the reference is the true optimum
  best <- Inf; m <- NULL
  for (opt in c("bobyqa", "Nelder_Mead", "nloptwrap")) {
    fo <- suppressWarnings(lmer(as.formula(s$formula), data = d, REML = s$reml,
                                control = lmerControl(optimizer = opt)))
    crit <- if (s$reml) REMLcrit(fo) else deviance(fo)
    if (crit < best - 1e-10) { m <- fo; best <- crit }
  }
  r <- list(data = s$data, formula = s$formula, reml = s$reml, factors = s$factors,
            objective = best, theta = as.numeric(getME(m, "theta")))
  r$anova2_satt <- tab(anova(m, type = 2))
  if (s$reml) r$anova2_kr <- tab(anova(m, type = 2, ddf = "Kenward-Roger"))
  r$lsmeans <- list(); r$lsmeans_pairs <- list(); r$lsmeans_kr <- list()
  r$emmeans <- list(); r$emmeans_pairs <- list()
  for (f in s$lsm) {
    r$lsmeans[[f]] <- tab(ls_means(m, which = f))
    r$lsmeans_pairs[[f]] <- tab(ls_means(m, which = f, pairwise = TRUE))
    if (s$reml) r$lsmeans_kr[[f]] <- tab(ls_means(m, which = f, ddf = "Kenward-Roger"))
    spec <- as.formula(paste("~", gsub(":", "*", f)))
    if (s$data == "cake_missing") next
    em <- suppressMessages(emmeans(m, spec, lmer.df = "satterthwaite"))
    r$emmeans[[f]] <- tab(summary(em))
    r$emmeans_pairs[[f]] <- tab(summary(pairs(em, adjust = "none")))
  }
  res[[s$name]] <- r
  cat(s$name, "done\n")
}
res$provenance <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), pbkrtest = as.character(packageVersion("pbkrtest")),
  emmeans = as.character(packageVersion("emmeans")), script = "tests/reference/make_type2_lsmeans_refs.R")
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"),
           "tests/reference/type2_lsmeans_refs.json")
