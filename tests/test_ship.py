"""The "which file do I ship" rule on constructed rows (figures chosen by hand, each case a rule)."""

from __future__ import annotations

from videoseal_litert.convert.ship import recommend


def _row(v: str, agreement: float | None, rss: float, size: float, verified: bool = True, db: float = 30.0) -> dict:
    return {
        "variant": v,
        "file": f"{v}.tflite",
        "size_mb": size,
        "size_ratio_to_fp32": size / 130.0,
        "latency_ratio_to_fp32": {"1": 1.0, "2": 1.0},
        "peak_rss_mb": rss,
        "verified": verified,
        "agreement": agreement,
        "agreement_is": "bits",
        "secondary_db": db,
    }


def _picks(rows: list[dict]) -> dict[str, str | None]:
    return {p["target"]: p["variant"] for p in recommend(rows)}


def test_faithful_integer_files_win_and_the_smallest_for_mid_range():
    rows = [
        _row("fp32", 1.0, 330, 130.0, db=200),
        _row("fp16", 1.0, 200, 65.0, db=60),
        _row("int8-dynamic", 1.0, 150, 34.0, db=47),
        _row("int8", 1.0, 148, 33.8, db=20),
        _row("int4", 0.995, 124, 22.0, db=29),  # below the 0.999 target: never picked
    ]
    assert _picks(rows) == {"flagship phone": "int8-dynamic", "mid-range phone": "int8", "low-RAM phone": "int8"}


def test_unverified_or_unfaithful_files_fall_back_to_float_and_say_so():
    rows = [
        _row("fp32", 1.0, 330, 130.0),
        _row("fp16", 1.0, 200, 65.0),
        _row("int8", 0.98, 148, 33.8),
        _row("int4", 1.0, 124, 22.0, verified=False),
    ]
    picks = recommend(rows)
    assert [p["variant"] for p in picks] == ["fp16", "fp16", "fp16"]
    assert "float kernels" in picks[0]["why"]


def test_nothing_fits_a_budget_is_named_with_the_smallest():
    rows = [_row("fp32", 1.0, 6300, 3090.0), _row("int8", 1.0, 1500, 780.0), _row("int4", 1.0, 700, 465.0, db=25)]
    picks = {p["target"]: p for p in recommend(rows)}
    assert picks["flagship phone"]["variant"] == "int8" and picks["mid-range phone"]["variant"] == "int4"
    low = picks["low-RAM phone"]
    assert low["variant"] is None and "within 512 MB" in low["why"] and "int4 at 700 MB" in low["why"]
