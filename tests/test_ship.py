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
    return {p["target"]: p["variant"] for p in recommend(rows) if p["target"].endswith("phone")}


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
    assert [p["variant"] for p in picks] == ["fp16", "fp16", "fp16", "fp32"]  # the web page: fp16 is slow on WASM
    assert "float kernels" in picks[0]["why"]


def test_nothing_fits_a_budget_is_named_with_the_smallest():
    rows = [_row("fp32", 1.0, 6300, 3090.0), _row("int8", 1.0, 1500, 780.0), _row("int4", 1.0, 700, 465.0, db=25)]
    picks = {p["target"]: p for p in recommend(rows)}
    assert picks["flagship phone"]["variant"] == "int8" and picks["mid-range phone"]["variant"] == "int4"
    low = picks["low-RAM phone"]
    assert low["variant"] is None and "within 512 MB" in low["why"] and "int4 at 700 MB" in low["why"]


def test_the_weight_cache_figure_counts_when_it_is_the_cheaper_way_to_load(tmp_path):
    """ChunkySeal's INT8 embedder, measured: 2298 MB through the Interpreter, 1360 MB with XNNPACK's
    weight cache (first launch). The cheaper figure is the load cost (an app can enable the cache), so
    the file fits the 2 GB flagship budget and the pick says how it loads."""
    from videoseal_litert.convert.ship import rows

    class Part:
        name = "extractor"

        @staticmethod
        def report(v):
            return f"verify-{v}"

        @staticmethod
        def file(v):
            return f"{v}.tflite"

    bench = {
        "latency": {"1": {"fp32": {"ratio_to_fp32": 1.0}, "int8": {"ratio_to_fp32": 0.2}}},
        "size": {"fp32": {"bytes": 3_090_000_000, "ratio_to_fp32": 1.0}, "int8": {"bytes": 780_000_000, "ratio_to_fp32": 0.25}},
        "peak_rss_mb": {"fp32": 8270.0, "int8": 2298.0},
        "peak_rss_weight_cache_mb": {"fp32": 4520.0, "int8": 1360.0},
    }
    table = rows(tmp_path, Part, bench)  # no verification reports here: nothing verified yet
    assert [(r["peak_rss_mb"], r["load_with"]) for r in table] == [(4520.0, "weight cache"), (1360.0, "weight cache")]
    bench["peak_rss_weight_cache_mb"] = {"fp32": None, "int8": 2400.0}  # not taken, or not cheaper: the Interpreter's
    assert [(r["peak_rss_mb"], r["load_with"]) for r in rows(tmp_path, Part, bench)] == [(8270.0, "interpreter"), (2298.0, "interpreter")]
    for r in table:
        r.update(verified=True, agreement=1.0, secondary_db=30.0)
    picks = {p["target"]: p for p in recommend(table)}
    assert picks["flagship phone"]["variant"] == "int8" and "with XNNPACK's weight cache" in picks["flagship phone"]["why"]


def test_the_web_pick_is_a_file_browsers_load():
    """int8-full is the most faithful integer file here but LiteRT.js cannot feed its int8 input, and fp16 is slow on
    WASM: the web page's pick is the best file a browser loads; every file still runs on the native C library."""
    from videoseal_litert.convert.ship import runs_on

    rows = [_row("fp32", 1.0, 330, 130.0, db=200), _row("fp16", 1.0, 200, 65.0, db=60), _row("int8-full", 1.0, 140, 33.0, db=40)]
    rows.append(_row("int8", 1.0, 148, 33.8, db=20))
    picks = {p["target"]: p["variant"] for p in recommend(rows)}
    assert picks["flagship phone"] == "int8-full" and picks["web page (LiteRT.js)"] == "int8"
    assert runs_on("int8-full") == ["native C library"] and runs_on("fp16") == ["native C library", "browser (WASM) (slow)"]
