"""A train-stage worker whose rank 1 fails at step 3: launched by test_distributed through
the same torchrun command line as the real stage, to prove one failing rank stops all."""
import os
import runpy

from finetuning.training.loop import Trainer

if os.environ.get("RANK") == "1":
    real_micro_step = Trainer.micro_step

    def failing_micro_step(self, batch, batches, index):
        if self.progress.step == 3:
            raise RuntimeError("injected failure on rank 1")
        return real_micro_step(self, batch, batches, index)

    Trainer.micro_step = failing_micro_step

if __name__ == "__main__":
    runpy.run_module("stages.train", run_name="__main__", alter_sys=True)
