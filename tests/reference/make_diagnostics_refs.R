# lme4 references for issue 13: prior weights, offsets, hatvalues, cooks.distance, rstudent,
# residual types, rePCA, influence (group deletion) and predict(newdata) with weights/offset.
# Run from the repository root:  Rscript tests/reference/make_diagnostics_refs.R
# Writes tests/reference/diagnostics_refs.json.  Weights and offsets are deterministic
# functions of the row number (stored in the JSON so the tests need no R).
suppressMessages({library(lme4); library(jsonlite)})
dd <- "pylmem/datasets/data"
ss <- read.csv(file.path(dd, "sleepstudy.csv"), stringsAsFactors=TRUE); ss$Subject <- factor(ss$Subject)
pe <- read.csv(file.path(dd, "Penicillin.csv"), stringsAsFactors=TRUE)
dy <- read.csv(file.path(dd, "Dyestuff.csv"), stringsAsFactors=TRUE)
ss$w <- 1 + (seq_len(nrow(ss)) %% 4) / 2
ss$off <- 0.3 * ss$Days + (seq_len(nrow(ss)) %% 5)
pe$w <- 0.5 + (seq_len(nrow(pe)) %% 3)
ctl <- lmerControl(optimizer="bobyqa", optCtrl=list(rhobeg=1e-2, rhoend=1e-12, maxfun=1e5),
                   check.conv.singular="ignore")
one <- function(f, data, extra=list()) {
  reml <- isREML(f)
  vc <- as.data.frame(VarCorr(f))
  r <- list(formula=deparse(formula(f), width.cutoff=500L), reml=reml, theta=unname(getME(f, "theta")),
    fixef=as.list(fixef(f)), stderr=unname(sqrt(diag(as.matrix(vcov(f))))), sigma=sigma(f),
    loglik=as.numeric(logLik(f)), objective=if (reml) REMLcrit(f) else deviance(f),
    aic=AIC(f), bic=BIC(f),
    vcov=unname(vc$vcov), sdcor=unname(vc$sdcor),
    fitted=unname(fitted(f)), resid_response=unname(residuals(f, type="response")),
    resid_pearson=unname(residuals(f, type="pearson")), hatvalues=unname(hatvalues(f)),
    cooks=unname(cooks.distance(f)), rstudent=unname(rstudent(f)))
  c(r, extra)
}
fitw <- function(form, data, reml, w=NULL) {
  if (is.null(w)) lmer(form, data=data, REML=reml, control=ctl)
  else { data$.w <- w; lmer(form, data=data, REML=reml, control=ctl, weights=.w) }
}
res <- list(data=list(sleepstudy_w=ss$w, sleepstudy_off=ss$off, penicillin_w=pe$w))
nd <- data.frame(Days=c(0, 3, 9, 4), Subject=factor(c("308", "309", "999", "372")),
                 off=c(1, 2, 0.5, 0))
for (reml in c(TRUE, FALSE)) {
  tag <- if (reml) "reml" else "ml"
  f <- fitw(Reaction ~ Days + (Days | Subject), ss, reml, ss$w)
  res[[paste0("sleep_w_", tag)]] <- one(f, ss, list(
      predict_new=unname(predict(f, newdata=nd, allow.new.levels=TRUE)),
      predict_new_pop=unname(predict(f, newdata=nd, re.form=NA))))
  f <- fitw(diameter ~ 1 + (1 | plate) + (1 | sample), pe, reml, pe$w)
  res[[paste0("penicillin_w_", tag)]] <- one(f, pe)
  f <- fitw(Reaction ~ Days + (Days | Subject), ss, reml)
  res[[paste0("sleep_", tag)]] <- one(f, ss, list(
      rePCA_sdev=unname(rePCA(f)$Subject$sdev), rePCA_rotation=unname(rePCA(f)$Subject$rotation)))
  f <- fitw(diameter ~ 1 + (1 | plate) + (1 | sample), pe, reml)
  res[[paste0("penicillin_", tag)]] <- one(f, pe, list(
      rePCA_plate=unname(rePCA(f)$plate$sdev), rePCA_sample=unname(rePCA(f)$sample$sdev)))
  f <- lmer(Reaction ~ Days + offset(off) + (Days | Subject), data=ss, REML=reml, control=ctl)
  res[[paste0("sleep_off_", tag)]] <- one(f, ss, list(
      predict_new=unname(predict(f, newdata=nd, allow.new.levels=TRUE)),
      predict_new_pop=unname(predict(f, newdata=nd, re.form=NA))))
}
nd_ss <- nd; res$newdata <- list(Days=nd$Days, Subject=as.character(nd$Subject), off=nd$off)
# influence: delete each Batch / each case of Dyestuff (REML), each Subject of sleepstudy (ML)
infl <- function(f, groups) {
  inf <- if (is.null(groups)) influence(f) else influence(f, groups=groups)
  g <- if (is.null(groups)) "case" else groups
  fe <- inf[[paste0("fixed.effects[-", g, "]")]]; vc <- inf[[paste0("var.cov.comps[-", g, "]")]]
  list(groups=rownames(fe), fixef=lapply(seq_len(ncol(fe)), function(j) unname(fe[, j])),
       vc=lapply(seq_len(ncol(vc)), function(j) unname(vc[, j])), vc_names=colnames(vc),
       se=lapply(inf[[paste0("vcov[-", g, "]")]], function(v) unname(sqrt(diag(as.matrix(v))))),
       # lme4's dfbetas fails for a single fixed effect (vapply drops to a vector)
       dfbetas=if (ncol(fe) > 1) lapply(seq_len(ncol(fe)), function(j) unname(dfbetas(inf)[, j])),
       cooks=unname(cooks.distance(inf)))
}
f <- lmer(Yield ~ 1 + (1 | Batch), data=dy, REML=TRUE, control=ctl)
res$dyestuff_influence <- infl(f, "Batch")
res$dyestuff_influence_case <- infl(f, NULL)
f <- lmer(Reaction ~ Days + (Days | Subject), data=ss, REML=FALSE, control=ctl)
res$sleep_influence <- infl(f, "Subject")
# lmerTest's Satterthwaite / Kenward-Roger df of a weighted REML fit (same control)
if (requireNamespace("lmerTest", quietly=TRUE)) {
  d <- ss; d$.w <- ss$w
  ft <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), data=d, REML=TRUE, control=ctl, weights=.w)
  res$sleep_w_reml_ddf <- list(
    satterthwaite=unname(summary(ft)$coefficients[, "df"]),
    kenward_roger=unname(summary(ft, ddf="Kenward-Roger")$coefficients[, "df"]))
}
# profile intervals of a weighted ML fit (lme4 warns "non-monotonic profile" for the fixed
# effects of weighted fits: only the variance parameters are used by the tests)
f <- fitw(Reaction ~ Days + (Days | Subject), ss, FALSE, ss$w)
ci <- suppressWarnings(confint(f, method="profile"))
res$sleep_w_ml_profile <- list(names=rownames(ci), lower=unname(ci[, 1]), upper=unname(ci[, 2]))
res$lme4_version <- as.character(packageVersion("lme4"))
writeLines(toJSON(res, auto_unbox=TRUE, digits=NA, pretty=TRUE, na="null"),
           "tests/reference/diagnostics_refs.json")
cat("wrote tests/reference/diagnostics_refs.json\n")
