"""Grace: the user's interface MAD — slash commands go straight to a MAD, prose goes to her Imperator.

Modules: commands (the ``/<mad> <tool> <json>`` syntax and result formatting),
schemas (configuration and tool models), mad (the MAD itself).
"""

from mads.grace.mad import Grace

__all__ = ["Grace"]
