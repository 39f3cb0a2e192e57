"""Backends run chunks of tasks and report what happened to them.

Everything else (jobs, chunking, ordering, progress, error mapping) lives
above, in ``_scheduler``, once for all backends.
"""
