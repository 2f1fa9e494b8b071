"""Data stages: preprocess, tokenizer, PII masking, memmap dataset."""
