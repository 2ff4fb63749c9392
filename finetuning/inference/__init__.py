"""Inference: model.py loads a fine-tuned classifier and predicts tokenized splits."""
