# Reference values for pylmem's inference (issue 11): lmerTest (Satterthwaite), pbkrtest
# (Kenward-Roger), lme4 confint (Wald, profile), lmerTest ranova/drop1.
# Run from the repository root:  Rscript tests/reference/make_inference_refs.R
# Writes tests/reference/inference_refs.json (CI never needs R).
suppressMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
dd <- "pylmem/datasets/data/"
rd <- function(f, fac) { d <- read.csv(paste0(dd, f)); for (v in fac) d[[v]] <- factor(d[[v]]); d }
# Dyestuff2 (lme4): the classic boundary fit, stored with the references
data(Dyestuff2, package = "lme4")
dsets <- list(
  Dyestuff = rd("Dyestuff.csv", "Batch"),
  Pastes = rd("Pastes.csv", c("batch", "cask", "sample")),
  sleepstudy = rd("sleepstudy.csv", "Subject"),
  Penicillin = rd("Penicillin.csv", c("plate", "sample")),
  cake = rd("cake.csv", c("replicate", "recipe", "temperature")),
  ratWeight = rd("ratWeight.csv", c("id", "regime", "gender", "dosage")),
  Dyestuff2 = data.frame(Batch = as.character(Dyestuff2$Batch), Yield = Dyestuff2$Yield))
dsets$Dyestuff2$Batch <- factor(dsets$Dyestuff2$Batch)
models <- list(
  list(name = "dyestuff_reml", data = "Dyestuff", formula = "Yield ~ 1 + (1|Batch)", reml = TRUE),
  list(name = "dyestuff_ml", data = "Dyestuff", formula = "Yield ~ 1 + (1|Batch)", reml = FALSE),
  list(name = "pastes_reml", data = "Pastes", formula = "strength ~ 1 + (1|batch/cask)", reml = TRUE),
  list(name = "pastes_ml", data = "Pastes", formula = "strength ~ 1 + (1|batch/cask)", reml = FALSE),
  list(name = "sleep_reml", data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)", reml = TRUE),
  list(name = "sleep_ml", data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)", reml = FALSE),
  list(name = "cake_reml", data = "cake", formula = "angle ~ recipe*temperature + (1|recipe:replicate)", reml = TRUE),
  list(name = "cake_ml", data = "cake", formula = "angle ~ recipe*temperature + (1|recipe:replicate)", reml = FALSE),
  list(name = "rat_gender_reml", data = "ratWeight", formula = "weight ~ gender*week + (week|id)", reml = TRUE),
  list(name = "rat_poly_ml", data = "ratWeight", formula = "weight ~ gender*(week + I(week^2)) + (week|id)", reml = FALSE),
  list(name = "penicillin_reml", data = "Penicillin", formula = "diameter ~ 1 + (1|plate) + (1|sample)", reml = TRUE),
  list(name = "dyestuff2_reml", data = "Dyestuff2", formula = "Yield ~ 1 + (1|Batch)", reml = TRUE),
  list(name = "dyestuff2_ml", data = "Dyestuff2", formula = "Yield ~ 1 + (1|Batch)", reml = FALSE))
profile_models <- c("dyestuff_ml", "pastes_ml", "sleep_ml", "sleep_reml", "dyestuff_reml")
tab <- function(x) { x <- as.data.frame(x); list(rows = rownames(x), columns = colnames(x),
  values = unname(lapply(colnames(x), function(c) as.numeric(x[[c]])))) }
catch <- function(expr) { w <- character(0)
  v <- withCallingHandlers(tryCatch(expr, error = function(e) list(error = conditionMessage(e))),
    warning = function(e) { w <<- c(w, conditionMessage(e)); invokeRestart("muffleWarning") },
    message = function(e) { w <<- c(w, conditionMessage(e)); invokeRestart("muffleMessage") })
  list(value = v, warnings = w) }
res <- list()
for (s in models) {
  d <- dsets[[s$data]]
  # several optimizers, the best criterion kept (bobyqa stops short on the rat model)
  fw <- NULL
  for (opt in c("bobyqa", "Nelder_Mead", "nloptwrap")) {
    fo <- catch(lmer(as.formula(s$formula), data = d, REML = s$reml,
                     control = lmerControl(optimizer = opt)))
    crit <- if (s$reml) REMLcrit(fo$value) else deviance(fo$value)
    if (is.null(fw) || crit < best - 1e-10) { fw <- fo; best <- crit }
  }
  m <- fw$value
  r <- list(data = s$data, formula = s$formula, reml = s$reml, fit_warnings = fw$warnings,
            theta = as.numeric(getME(m, "theta")), sigma = sigma(m),
            objective = as.numeric(if (s$reml) REMLcrit(m) else deviance(m)),
            vcov_varpar = unname(m@vcov_varpar), coef_satt = tab(summary(m)$coefficients))
  if (s$data == "Dyestuff2") r$data_rows <- list(Batch = as.character(d$Batch), Yield = d$Yield)
  if (length(fixef(m)) > 1) {
    r$anova3_satt <- tab(anova(m, type = 3))
    r$anova1_satt <- tab(anova(m, type = 1))
    dw <- catch(drop1(m)); r$drop1 <- if (is.null(dw$value$error)) tab(dw$value) else dw$value
  }
  rw <- catch(ranova(m)); r$ranova <- tab(rw$value); r$ranova_warnings <- rw$warnings
  if (s$reml) {
    kw <- catch(summary(m, ddf = "Kenward-Roger")$coefficients)
    r$coef_kr <- tab(kw$value); r$kr_warnings <- kw$warnings
    r$vcov_adj <- unname(as.matrix(vcovAdj(m)))
    if (length(fixef(m)) > 1) {
      r$anova3_kr <- tab(anova(m, type = 3, ddf = "Kenward-Roger"))
      # KRmodcomp on the last coefficient: the scaled F and its parts
      L <- matrix(0, 1, length(fixef(m))); L[1, length(fixef(m))] <- 1
      kr <- KRmodcomp(m, L)$test
      r$krmodcomp_last <- list(F = kr["Ftest", "stat"], Fu = kr["FtestU", "stat"], ndf = kr["Ftest", "ndf"],
                               ddf = kr["Ftest", "ddf"], scaling = kr["Ftest", "F.scaling"], p = kr["Ftest", "p.value"])
    }
  }
  r$confint_wald <- tab(confint(m, method = "Wald"))
  if (s$name %in% profile_models) {
    pw <- catch(confint(m, method = "profile", oldNames = TRUE))
    r$confint_profile <- tab(pw$value); r$profile_warnings <- pw$warnings
    pw90 <- catch(confint(m, method = "profile", level = 0.9, oldNames = TRUE))
    r$confint_profile90 <- tab(pw90$value)
    pr <- as.data.frame(profile(m, signames = TRUE))
    r$profile <- list(zeta = pr$.zeta, param = as.character(pr$.par),
      value = vapply(seq_len(nrow(pr)), function(i) pr[i, as.character(pr$.par[i])], 0))
  }
  res[[s$name]] <- r
  cat(s$name, "done\n")
}
res$provenance <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), pbkrtest = as.character(packageVersion("pbkrtest")),
  script = "tests/reference/make_inference_refs.R")
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"),
           "tests/reference/inference_refs.json")
