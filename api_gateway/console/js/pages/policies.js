// One line on what each policy does (as the proto documents it).
export const EXPLAIN = {
  retryStrategy: {
    RETRY_STRATEGY_EXPONENTIAL_BACKOFF: "Each retry waits initial delay × multiplier^(n−1), at most the max delay.",
    RETRY_STRATEGY_LINEAR_BACKOFF: "Each retry waits initial delay × n, at most the max delay.",
    RETRY_STRATEGY_FIXED_BACKOFF: "Each retry waits the initial delay.",
  },
  misfirePolicy: {
    MISFIRE_POLICY_SKIP: "Slots missed while no scheduler ran are recorded as skipped; the schedule goes on from the next one.",
    MISFIRE_POLICY_RUN_ONCE: "After downtime the latest missed slot runs once; the other missed slots are recorded as skipped.",
    MISFIRE_POLICY_RUN_ALL: "After downtime every missed slot runs (up to a cap); the excess is recorded as skipped.",
  },
  overlapPolicy: {
    OVERLAP_POLICY_ALLOW: "A slot that comes while the previous run still runs starts anyway: both run.",
    OVERLAP_POLICY_FORBID: "A slot that comes while the previous run still runs is recorded as skipped (reason overlap).",
    OVERLAP_POLICY_REPLACE: "A slot that comes while the previous run still runs cancels it and starts.",
  },
  network: {
    NETWORK_NONE: "The script reaches only its own loopback.",
    NETWORK_HOST: "The script uses the worker host's network — only on workers whose operator allows it.",
  },
};
