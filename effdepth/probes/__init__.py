"""Probes: pure functions from a Trace (plus the model, for interventions) to tidy pandas tables."""
