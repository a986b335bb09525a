"""scheduler_svc: AuthService, JobService, RunService and the scheduling loops."""
