import os
import sys

# Lava sets the multiprocessing start method at import; import it before anything fixes it.
import lava.magma.core.process.process  # noqa: F401,E402
import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # reference_sim


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Generated data sets (event-digits) are cached in a folder of this session, not in the
    user's ~/.cache; CLI runs in subprocesses inherit it."""
    old = os.environ.get("DPAP_DEPLOY_CACHE")
    os.environ["DPAP_DEPLOY_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield
    if old is None:
        os.environ.pop("DPAP_DEPLOY_CACHE", None)
    else:
        os.environ["DPAP_DEPLOY_CACHE"] = old


@pytest.fixture(scope="session")
def digits():
    from dpap_deploy.data import load_digits

    return load_digits()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
