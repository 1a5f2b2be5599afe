"""Every recipe in configs/ parses with our parser (keys exist, values have the right types)."""
from pathlib import Path

import pytest

from seqcls.arguments import parse_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe, tmp_path):
    # GPU recipes ask for bf16, which transformers refuses on a machine without a GPU unless use_cpu is set
    model, data, train = parse_args([str(recipe), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    assert model.model_name_or_path
    assert isinstance(train.learning_rate, float) and train.learning_rate > 0
    assert data.train_file or data.dataset_name


def test_quickstart_uses_the_embedded_model_and_predicts():
    model, data, train = parse_args([str(ROOT / "configs/quickstart.yaml")])
    assert model.model_name_or_path == "models/tiny-qwen2"
    assert train.do_predict and data.test_file and train.use_cpu
