"""Data: row formats (messages, preference, prompt), JSONL I/O with atomic writes, packing collators."""
