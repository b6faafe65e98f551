"""Workflowsoft sensors."""
