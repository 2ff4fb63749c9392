"""Inference: the model put to work.

    model.py      load a fine-tuned classifier; predict and score tokenized splits
    backends.py   torch, onnx and onnx-int8 behind one `logits` call
    predictor.py  texts in, label scores out (the path of predict, serve and export)
    files.py      what `finetune predict` reads and writes
    batcher.py    dynamic micro-batching of concurrent requests
    service.py    `finetune serve`: the HTTP API (Hugging Face's text-classification)
    export.py     the ONNX export and int8 quantization
    measure.py    accuracy, latency, throughput and drift of each backend
    telemetry.py  what serve tells Prometheus (/metrics): requests, batches, labels, drift
"""
