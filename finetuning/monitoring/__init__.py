"""Monitoring: writer.py (the one tensorboardX SummaryWriter wrapper), monitor.py (what is
logged at which step), events.py (reading the logs back with tensorboard's reader)."""
