# Reference values for predict(re_form=...) naming part of a random-effects term (lme4's
# predict.merMod uses the named columns' conditional modes only).
# Run from the repository root:  Rscript tests/reference/make_reform_refs.R
# Writes tests/reference/reform_refs.json (CI never needs R).
suppressMessages({library(lme4); library(jsonlite)})
d <- read.csv("pylmem/datasets/data/sleepstudy.csv"); d$Subject <- factor(d$Subject)
nd <- data.frame(Days = c(0, 3, 9, 4), Subject = c("308", "372", "999", "333"))
res <- list()
cases <- list(
  list(name = "slope_int", formula = "Reaction ~ Days + (Days|Subject)", re_form = "~(1|Subject)"),
  list(name = "slope_slope", formula = "Reaction ~ Days + (Days|Subject)", re_form = "~(0+Days|Subject)"),
  list(name = "double_int", formula = "Reaction ~ Days + (Days||Subject)", re_form = "~(1|Subject)"),
  list(name = "double_slope", formula = "Reaction ~ Days + (Days||Subject)", re_form = "~(0+Days|Subject)"),
  list(name = "split_whole", formula = "Reaction ~ Days + (1|Subject) + (0+Days|Subject)",
       re_form = "~(Days|Subject)"))
for (s in cases) {
  m <- lmer(as.formula(s$formula), d, REML = TRUE)
  rf <- as.formula(s$re_form)
  res[[s$name]] <- list(formula = s$formula, re_form = s$re_form,
    fitted = unname(predict(m, re.form = rf)),
    newdata = unname(predict(m, nd, re.form = rf, allow.new.levels = TRUE)))
}
res$newdata <- nd
res$provenance <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                       script = "tests/reference/make_reform_refs.R")
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/reform_refs.json")
