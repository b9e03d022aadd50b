"""The runtime every MAD stands on, apart from the MADs themselves.

- ``base`` — the :class:`~mads.core.base.MAD` base class and its context; ``tools`` — typed
  tools; ``imperator`` — the Thought Engine's validated loop; ``errors`` — typed failures;
- ``names`` — the well-known MAD addresses; ``settings`` — configuration (each MAD declares
  its own section model); ``directory`` — presence across processes;
- libraries several MADs and the host share: ``redaction`` (the secret redactor),
  ``audit_trail`` (the hash-chained trail McNamara writes and the CLI verifies),
  ``quarantine`` (the delivery gate), ``sqlite`` (private files, WAL, one migration system),
  ``telemetry``, ``config_changes``, ``sandbox_capability`` (the WASM cell as a grant).

Nothing here imports a MAD package; ``tests/test_codebase.py`` checks it.
"""
