"""Tasks: the embedded toyworld and the verifiers shared by teacher filtering, eval grading and RL rewards."""
