"""Lookup tables, error metrics, gradient LUTs and their file formats."""
