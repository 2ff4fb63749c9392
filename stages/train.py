"""train: fine-tune the base model on the tokenized train split.

Reads `<tokenized>`, `<prepared>/validation.parquet` (texts for TensorBoard) and
`<base_model>`; writes the fine-tuned HF folder `<trained>` (the weights of the step
`train.select` chose, calibrated when `train.calibrate`), tensorboardX logs in
`<tensorboard>`, the run's figures in `metrics/train.json` (a DVC metric) and what ran
(hardware, processes, precision) in `metrics/train_run.json`. With
`train.num_processes > 1` the stage relaunches itself under torchrun (DDP). The loop lives
in finetuning/training/.
"""
from __future__ import annotations

from finetuning.config import Config
from finetuning.outputs import write_json
from finetuning.stage import run_stage
from finetuning.training.checkpoint import clear_checkpoints
from finetuning.training.launch import launch_distributed, needs_launch, record
from finetuning.training.lora import adapter_size_mb
from finetuning.training.runtime import init_runtime, shutdown
from finetuning.training.session import build_trainer, run_training, save_model


def train(cfg: Config) -> None:
    """Launch DDP workers if asked, else train in this process (rank 0 writes)."""
    if needs_launch(cfg.train):
        launch_distributed(cfg.train, module="stages.train")
        return
    runtime = init_runtime(cfg.train.threads)
    trainer, tokenizer = build_trainer(cfg, runtime)
    summary, ran = run_training(trainer)
    if runtime.is_main:
        save_model(trainer.module, tokenizer, cfg.paths.trained, cfg.tokenize.max_length)
        ran["adapter_mb"] = adapter_size_mb(cfg.paths.trained)
        write_json(cfg.paths.train_run, ran)
        write_json(cfg.paths.train_metrics, summary)
        clear_checkpoints(cfg.paths.checkpoints)  # finished: nothing left to resume
    shutdown(runtime)  # not on an error: that rank exits and torchrun stops the rest


@record
def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.train`)."""
    run_stage("train", __doc__.splitlines()[0], train, argv)


if __name__ == "__main__":
    main()
