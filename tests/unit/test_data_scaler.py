"""The JSON scaler: every kind round-trips, and no column can make it divide by zero."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flts.data.scaler import Scaler

KINDS = ["minmax", "standard", "robust", "maxabs"]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(50, 10, 200), "b": rng.exponential(3, 200), "c": np.arange(200.0)})


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_round_trip(kind: str) -> None:
    frame = _frame()
    scaler = Scaler.fit(frame, ["a", "b", "c"], kind)
    scaled = scaler.transform(frame)
    assert scaled.dtypes.eq(np.float32).all()
    restored = scaler.inverse(scaled[["c", "a"]].to_numpy()[:, None, :], ["c", "a"])
    assert restored.shape == (200, 1, 2)
    np.testing.assert_allclose(restored[:, 0, :], frame[["c", "a"]].to_numpy(), rtol=1e-5, atol=1e-4)


def test_kinds_have_their_usual_statistics() -> None:
    frame = pd.DataFrame({"x": [-2.0, 0.0, 2.0, 4.0, 6.0]})
    expected = {"minmax": (-2.0, 8.0), "standard": (2.0, np.sqrt(8.0)), "robust": (2.0, 4.0), "maxabs": (0.0, 6.0)}
    for kind, (center, scale) in expected.items():
        scaler = Scaler.fit(frame, ["x"], kind)
        assert scaler.center == pytest.approx((center,))
        assert scaler.scale == pytest.approx((scale,))
    assert Scaler.fit(frame, ["x"], "minmax").transform(frame)["x"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_degenerate_columns_never_divide_by_zero(kind: str) -> None:
    train = pd.DataFrame(
        {
            "constant": np.full(50, 7.0),
            "big_constant": np.full(50, 1e6 + 0.1),
            "zeros": np.zeros(50),
            "empty": np.full(50, np.nan),
            "mostly_zero": np.r_[np.zeros(48), 5.0, 10.0],
        }
    )
    scaler = Scaler.fit(train, list(train.columns), kind)
    constant_scale = (7.0, 1e6 + 0.1) if kind == "maxabs" else (1.0, 1.0)
    assert scaler.scale[:4] == (*constant_scale, 1.0, 1.0)
    assert all(np.isfinite(scaler.scale)) and min(scaler.scale) > 0
    later = pd.DataFrame({name: np.linspace(-100, 100, 11) for name in train.columns})
    scaled = scaler.transform(later).to_numpy()
    assert np.isfinite(scaled).all()
    # float32 keeps ~7 digits of (x - 1e6): the round trip is exact to that precision.
    np.testing.assert_allclose(scaler.inverse(scaled, list(train.columns)), later.to_numpy(), atol=0.1)


def test_zero_iqr_falls_back_to_the_range() -> None:
    scaler = Scaler.fit(pd.DataFrame({"x": np.r_[np.zeros(48), 5.0, 10.0]}), ["x"], "robust")
    assert scaler.scale == (10.0,)


def test_fit_on_empty_frame_is_identity() -> None:
    scaler = Scaler.fit(pd.DataFrame({"x": []}, dtype=float), ["x"], "standard")
    assert (scaler.center, scaler.scale) == ((0.0,), (1.0,))


def test_json_round_trip() -> None:
    scaler = Scaler.fit(_frame(), ["a", "b"], "robust")
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored == scaler
    pd.testing.assert_frame_equal(restored.transform(_frame()), scaler.transform(_frame()))


def test_invalid_parameters_and_columns_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        Scaler.from_dict({"kind": "minmax", "columns": ["x"], "center": [0.0], "scale": [0.0]})
    with pytest.raises(ValueError, match="same length"):
        Scaler.from_dict({"kind": "minmax", "columns": ["x"], "center": [0.0, 1.0], "scale": [1.0]})
    scaler = Scaler.fit(_frame(), ["a"], "minmax")
    with pytest.raises(KeyError, match="not fitted on columns"):
        scaler.inverse(np.zeros((2, 1)), ["b"])
    with pytest.raises(ValueError, match="last axis has 2 values"):
        scaler.inverse(np.zeros((2, 2)), ["a"])
