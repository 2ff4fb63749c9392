"""train: fine-tune the base model on the tokenized train split.

Reads `<tokenized>`, `<prepared>/validation.parquet` (texts for TensorBoard) and
`<base_model>`; writes the fine-tuned HF folder `<trained>` (the weights of the step
`train.select` chose, calibrated when `train.calibrate`), tensorboardX logs in
`<tensorboard>`, the run's figures in `metrics/train.json` (a DVC metric) and what ran
(hardware, processes, precision) in `metrics/train_run.json`. When the topology
(`--nproc-per-node`, `--nnodes`, ... or torchrun's PET_* variables) asks for more than one
process, the stage relaunches itself under torchrun (DDP). The loop lives in
finetuning/training/.
"""
from __future__ import annotations

from finetuning.config import Config
from finetuning.data.truncation import truncation_of
from finetuning.outputs import stage_outputs
from finetuning.stage import run_stage, stage_parser
from finetuning.training.checkpoint import clear_checkpoints
from finetuning.training.launch import (Topology, add_topology_options, launch_distributed,
                                        needs_launch, record)
from finetuning.training.lora import adapter_size_mb
from finetuning.training.runtime import init_runtime, shutdown
from finetuning.training.session import build_trainer, run_training, save_model


def train(cfg: Config, topology: Topology = Topology(), params: str = "params.yaml") -> None:
    """Launch DDP workers on `params` if the topology asks for them, else train in this
    process (rank 0 writes)."""
    if needs_launch(topology):
        launch_distributed(topology, "stages.train", ["--params", params], cfg.train.threads)
        return
    runtime = init_runtime(cfg.train.threads)
    trainer, tokenizer = build_trainer(cfg, runtime)
    summary, ran = run_training(trainer)
    if runtime.is_main:
        with stage_outputs() as out:  # the model and its figures land together
            folder = out.dir(cfg.paths.trained)
            save_model(trainer.module, tokenizer, folder,
                       truncation_of(cfg.tokenize, bool(cfg.prepare.text_pair_column)))
            ran["adapter_mb"] = adapter_size_mb(folder)
            out.json(cfg.paths.train_run, ran)
            out.json(cfg.paths.train_metrics, summary)
        clear_checkpoints(cfg.paths.checkpoints)  # finished: nothing left to resume
    shutdown(runtime)  # not on an error: that rank exits and torchrun stops the rest


@record
def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.train`)."""
    description = __doc__.splitlines()[0]
    parser = stage_parser("train", description)
    add_topology_options(parser)
    run_stage("train", description,
              lambda cfg, args: train(cfg, Topology.from_args(args), args.params),
              argv, parser=parser)


if __name__ == "__main__":
    main()
