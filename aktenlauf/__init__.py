"""aktenlauf: shared kernel (settings, logging, errors, payload codec, CLI, dev stack).

The domain lives in the top-level packages fixed by DESIGN.md:
workflows/, activities/, eakte/, intake/, api/ and worker.py.
"""
