"""Governed regeneration: rebuild a MAD from its requirements, confined, reported, approved by a person.

Infrastructure: this package imports the runtime (``mads.core``) and the bus, never a MAD's code —
a MAD under regeneration is only ever imported inside the confined process.
"""
