"""The operator's toolbox: command-line tools run by a person, next to (not inside) the ecosystem.

Not a MAD: it talks to no bus, so it may open MAD libraries (Turing's vault,
McNamara's audit trail) directly on their files.
"""
