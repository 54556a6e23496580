import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(autouse=True, scope="session")
def _latency_tables_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Latency budgets keep per-layer tables on disk: never in the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RECONVENE_FX_CACHE_DIR", str(tmp_path_factory.mktemp("latency_cache")))
    yield
    mp.undo()
