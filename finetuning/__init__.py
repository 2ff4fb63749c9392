"""finetuning: the library behind the pipeline's stages and the `finetune` command.

    config/      params.yaml as typed, validated sections
    data/        sources and fetching, tables, splits, tokenization, batching
    training/    runtime and launch (DDP), schedule, the loop, checkpoints, one run
    inference/   loading a classifier and predicting tokenized splits
    monitoring/  the one TensorBoard writer, what is logged when, reading logs back
    reporting/   the report: document model, figures, sections, plot data
    metrics.py   scores from logits, accumulated on the device
    baseline.py  TF-IDF + logistic regression, scored like the model
    stage.py     the entry point every stage in stages/ shares
    cli.py       the `finetune` command
"""
