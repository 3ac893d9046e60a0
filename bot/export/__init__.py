"""Consented feedback as training rows (bot.export.formats), written by bot.export.writer."""

import os

# the command line offers these without loading the formats themselves; FORMATS are the JSONL
# formats (one row shape each), which the hf export writes together as one dataset's configs
FORMATS = ("sft", "kto", "dpo", "oasst", "openwebui", "refusal")
HF_FORMAT = "hf"
EXPORT_FORMATS = (*FORMATS, HF_FORMAT)

# processes a JSONL export is split between by default: past a few, the database's reads and
# the disk, not the CPU, set the pace
MAX_JOBS = 4


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))
