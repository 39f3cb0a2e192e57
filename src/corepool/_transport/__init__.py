"""How bytes move between processes: pickling, and the shared status board.

Imported by both the parent and the workers; imports only ``_protocol`` and
``errors`` from corepool.
"""
