"""Grounding: documents people trust, cut into passages, indexed and retrieved for answers.

Nothing here knows about Matrix: the transport downloads files, the core decides what to index
and where; this package extracts, splits, indexes and searches."""
