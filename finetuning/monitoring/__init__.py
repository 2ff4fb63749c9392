"""Monitoring: writer.py (the one tensorboardX SummaryWriter wrapper), monitor.py (what
train logs at which step), scores.py (evaluate's run: final scores and HPARAMS),
events.py (reading the logs back with tensorboard's reader), drift.py (live traffic
against the validation split, for predict and serve)."""
