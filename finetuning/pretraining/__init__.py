"""The pretrain stage's library: masked-language-model pretraining of the base, and bases
built from scratch.

    base.py     which folder is the base tokenize and train use (pretrain's output, or the
                fetched base passed straight through)
    corpus.py   the texts pretraining reads: the train split's, and an unlabeled corpus
    scratch.py  a WordPiece tokenizer and a seeded BERT built from the `scratch:` params
    mlm.py      the MLM loop: masking, AdamW with warmup, TensorBoard, checkpoints
    run.py      one pretraining run from start to finish, and the base it saves
"""
