"""Training progress: a tqdm bar on a terminal, plain rate-limited log lines in a file."""
import logging

from masklab.pretrain.loop.progress import TrainProgress


def test_non_tty_progress_logs_lines_at_most_every_interval_and_the_last_step(caplog, capsys):
    caplog.set_level(logging.INFO, "masklab.train")
    p = TrainProgress(total=10, initial=0, enabled=True, every_s=3600.0, tty=False)
    for step in range(1, 11):
        p.update()
        p.logged(step, 1.0 / step, 0.5, 1000.0)
    p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("step 1/10 (10%): loss 1.0000") and lines[-1].startswith("step 10/10 (100%)")
    assert len(lines) == 2  # the interval holds back every line between the first and the last
    assert "\r" not in capsys.readouterr().err


def test_tty_progress_draws_a_bar_and_logs_nothing(caplog, capsys):
    caplog.set_level(logging.INFO, "masklab.train")
    p = TrainProgress(total=4, initial=1, enabled=True, tty=True)
    for step in range(2, 5):
        p.update()
        p.logged(step, 0.5, 0.5, 10.0)
    p.close()
    assert not caplog.records and "train" in capsys.readouterr().err


def test_disabled_progress_is_silent(caplog, capsys):
    caplog.set_level(logging.INFO, "masklab.train")
    p = TrainProgress(total=2, initial=0, enabled=False, tty=False)
    p.logged(2, 0.1, 0.1, 1.0)
    p.close()
    assert not caplog.records and not capsys.readouterr().err
