"""xfer: does a network trained on one task help another, and which way of transferring it works best?"""
from xfer.cli import register_resolvers

# Registered at import: sweep jobs that run in other processes (joblib, submitit) resolve the run-folder
# names too, and Hydra hands them the parent's resolver cache so every job agrees on the folder.
register_resolvers()
