"""Hypothesis settings for the fuzz harnesses: a few hundred inputs in `make test`, many more in `make fuzz`."""
import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("PODSSH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
