import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy machine

_MODELS = {}


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(family, **tiny_pipeline kwargs) -> a cached massact_viz.Model."""
    import massact_viz as mv
    from massact_viz.testing import tiny_pipeline

    def get(family, **kw):
        key = (family, tuple(sorted(kw.items())))
        if key not in _MODELS:
            _MODELS[key] = mv.load(tiny_pipeline(family, **kw))
        return _MODELS[key]
    return get


@pytest.fixture
def interrupt(monkeypatch):
    """interrupt(obj, name, at) -> calls: ``obj.name`` raises KeyboardInterrupt on its ``at``-th call (a job
    stopped mid-way); ``calls["n"]`` counts the calls, and setting it past ``at`` lets every later call run."""
    def patch(obj, name, at):
        real, calls = getattr(obj, name), {"n": 0}

        def wrapped(*a, **k):
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt("interrupted")
            return real(*a, **k)
        monkeypatch.setattr(obj, name, wrapped)
        return calls
    return patch
