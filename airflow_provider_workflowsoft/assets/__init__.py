"""Airflow Assets for Workflowsoft integration steps (event-driven scheduling)."""
