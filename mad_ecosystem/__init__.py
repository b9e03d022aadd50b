"""The entry point: one command composes the host (bus + MADs) with the gateway and runs them.

``python ecosystem.py``, ``python -m mad_ecosystem`` and the ``mad-ecosystem`` console script
all run :func:`mad_ecosystem.cli.main`. This package is the top floor: it may import the
gateway, the host and the operator commands; nothing imports it.
"""
