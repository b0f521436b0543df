"""The seeded fault simulator's parts: schedules, runs, simulated clients, checks."""
