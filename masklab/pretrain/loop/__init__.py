"""The training loop: run state, resume, one step, stop signals, engines, metrics, progress."""
