"""The worker engine: drain a step, claim by group commit, run the completion sequence for each instance."""
