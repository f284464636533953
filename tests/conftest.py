"""Session fixtures shared by all tests: the reference fixture sets and their regenerated models.

What it is: `reference_dir` (parametrized over `helpers.reference_fixture_dirs()`; any test that
asks for it, directly or through another fixture, runs once per reference set), the parsed
`reference_set`, its checkpoint folder written once per session, and the float32 model loaded
back through `load_checkpoint`. What it is not: test logic.

Invariant: the model a reference test sees was loaded from disk by the same loader a real
checkpoint goes through, from weights made by that folder's own recipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from packcache_core.loading import load_checkpoint
from packcache_core.model import LumosTransformer
from tests.helpers import ReferenceSet, reference_fixture_dirs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "reference_dir" in metafunc.fixturenames:
        dirs = reference_fixture_dirs()
        metafunc.parametrize(
            "reference_dir", dirs, ids=[p.name for p in dirs], indirect=True, scope="session"
        )


@pytest.fixture(scope="session")
def reference_dir(request: pytest.FixtureRequest) -> Path:
    """One reference fixture folder (see `reference_fixture_dirs`)."""
    return request.param


@pytest.fixture(scope="session")
def reference_set(reference_dir: Path) -> ReferenceSet:
    return ReferenceSet.read(reference_dir)


@pytest.fixture(scope="session")
def reference_checkpoint(
    reference_set: ReferenceSet, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference weights written as a float32 checkpoint folder, once per session."""
    return reference_set.write_weights(tmp_path_factory.mktemp(reference_set.path.name))


@pytest.fixture(scope="session")
def reference_model(reference_checkpoint: Path) -> LumosTransformer:
    """The float32 CPU model, loaded back through `load_checkpoint`. Tests must not mutate it."""
    return load_checkpoint(reference_checkpoint, device="cpu", dtype=torch.float32)
