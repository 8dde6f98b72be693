"""benchmarks/detection_goals.py's chunking: every short span lies whole in one window."""
import numpy as np

from benchmarks.detection_goals import windows


def test_windows_cover_every_short_span():
    rng = np.random.default_rng(0)
    for n in (0, 5, 40, 41, 97, 400):
        text = "".join(rng.choice(list("abcdefgh"), n))
        w = windows(text, 40, 20)
        assert all(len(x) <= 40 for x in w) and w[-1] == text[-40:]
        for start in range(n):
            for length in range(1, min(20, n - start) + 1):
                assert any(text[start:start + length] in x for x in w)
    assert windows("short", 40, 20) == ["short"]
