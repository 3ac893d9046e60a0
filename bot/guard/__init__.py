"""Guardrails: moderation backends (rules, Llama Guard, /v1/moderations), French personal
identifiers, and the decision a category leads to.

Nothing here knows about Matrix or the answer pipeline: the core asks, this package answers."""
