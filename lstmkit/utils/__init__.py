"""Run plumbing shared by every app: atomic checkpoints, run configs, seeding."""
