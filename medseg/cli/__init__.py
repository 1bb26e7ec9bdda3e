"""Command line interface: parse arguments, call the Python API, print. Nothing else.

May import: every other package.
"""
