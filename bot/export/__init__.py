"""Consented feedback as training rows (bot.export.formats), written by bot.export.writer."""

# the command line offers these without loading the formats themselves
FORMATS = ("sft", "kto", "dpo", "oasst", "openwebui", "refusal")
