"""Transports: Envoy's wire formats in, core requests to the decision core, verdicts back out."""
