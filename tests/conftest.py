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
