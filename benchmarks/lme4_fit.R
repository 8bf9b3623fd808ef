# Fit one benchmark case with lme4 and print JSON lines (used by compare.py).
#
#   Rscript lme4_fit.R DATA.csv "FORMULA" REML(TRUE|FALSE) REPS "fac1,fac2" BUDGET_S
#
# R start-up and reading the CSV are not timed: after a warm-up fit, the fit is timed
# REPS times with system.time() (elapsed), stopping early once BUDGET_S seconds of timed
# fits have been spent (always at least one).  When the warm-up alone took longer than
# BUDGET_S, it is reported as the only timing (the "warmup_only" flag).
args <- commandArgs(trailingOnly = TRUE)
csv <- args[1]
form <- as.formula(args[2])
reml <- as.logical(args[3])
reps <- as.integer(args[4])
factors <- if (length(args) >= 5 && nzchar(args[5])) strsplit(args[5], ",")[[1]] else character(0)
budget <- if (length(args) >= 6) as.numeric(args[6]) else 60

suppressPackageStartupMessages(library(lme4))

hdr <- names(read.csv(csv, nrows = 1, check.names = FALSE))
cls <- ifelse(hdr %in% factors, "factor", NA)
d <- read.csv(csv, colClasses = cls, check.names = FALSE)

num <- function(x) sprintf("%.17g", x)
msgs <- character(0)
fitonce <- function() {
  withCallingHandlers(
    lmer(form, data = d, REML = reml),
    warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") })
}

t_warm <- system.time(fit <- fitonce())[["elapsed"]]
cat(sprintf('{"event": "warmup", "seconds": %s}\n', num(t_warm)))
flush(stdout())
times <- numeric(0)
warmup_only <- FALSE
if (t_warm > budget) {
  times <- t_warm
  warmup_only <- TRUE
} else {
  spent <- 0
  for (i in seq_len(reps)) {
    msgs <- character(0)
    t <- system.time(fit <- fitonce())[["elapsed"]]
    times <- c(times, t)
    spent <- spent + t
    if (spent > budget) break
  }
}
ll <- as.numeric(logLik(fit))
conv <- fit@optinfo$conv$lme4$messages
msgs <- unique(c(msgs, if (is.null(conv)) character(0) else conv))
esc <- function(s) gsub('"', "'", gsub("[\r\n\t]", " ", gsub("\\\\", "/", s)))
wjson <- if (length(msgs)) paste0('"', esc(msgs), '"', collapse = ", ") else ""
cat(sprintf('{"event": "result", "seconds": [%s], "loglik": %s, "warmup_only": %s, "n_evals": %s, "warnings": [%s], "r_version": "%s", "lme4_version": "%s"}\n',
            paste(num(times), collapse = ", "), num(ll), tolower(as.character(warmup_only)),
            as.integer(fit@optinfo$feval),
            wjson,
            paste(R.version$major, R.version$minor, sep = "."),
            as.character(packageVersion("lme4"))))
