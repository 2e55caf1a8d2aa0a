"""Glucose: OhioT1DM reader, simulated cohorts, the glucose transformer teacher, GlucoNet, clinical metrics."""
