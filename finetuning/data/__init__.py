"""Data, from a source string to padded batches, module by the stage that uses it:
sources.py and fetching.py (fetch); tables.py and splits.py (prepare); prepared.py (the
prepared splits on disk, read by the stages after prepare); tokenizer.py and
tokenization.py (tokenize); batching.py (train, evaluate)."""
