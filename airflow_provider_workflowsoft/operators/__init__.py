"""Workflowsoft operators."""
