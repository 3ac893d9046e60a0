"""Consented feedback as training rows (bot.export.formats), written by bot.export.writer."""

# the command line offers these without loading the formats themselves; FORMATS are the JSONL
# formats (one row shape each), which the hf export writes together as one dataset's configs
FORMATS = ("sft", "kto", "dpo", "oasst", "openwebui", "refusal")
HF_FORMAT = "hf"
EXPORT_FORMATS = (*FORMATS, HF_FORMAT)
