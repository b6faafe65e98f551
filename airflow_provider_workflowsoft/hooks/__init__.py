"""Workflowsoft hooks."""
