"""Training: runtime.py and launch.py (where it runs, DDP through torchrun), schedule.py
(accumulation, optimizer, learning-rate schedule), window.py and loop.py (the loop and its
running figures), selection.py (the weights kept: last or best validation, early
stopping), calibration.py (temperature scaling folded into the head), checkpoint.py
(exact resume), session.py (one run, start to finish)."""
