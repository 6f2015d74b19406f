"""Figures (matplotlib, Agg backend): written as PNG into the run directory and sent to loggers."""
