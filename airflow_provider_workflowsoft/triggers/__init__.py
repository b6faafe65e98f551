"""Workflowsoft triggers."""
