"""Workflowsoft notifications."""
