"""The accuracy chart's geometry: pure functions, checked against coordinates worked out by hand."""

from __future__ import annotations

from attribution.charts import LABEL_CHARS, LABEL_W, PLOT_W, ROW_H, VALUE_W, accuracy_chart

ROWS = [
    {
        "label": "heuristic",
        "agent": 0.5,
        "agent_ci": [0.25, 0.75],
        "step": 0.2,
        "step_ci": [0.05, 0.45],
        "n": 12,
        "muted": False,
    },
    {
        "label": "tiny",
        "agent": 1.0,
        "agent_ci": [0.2, 1.0],
        "step": 0.0,
        "step_ci": [0.0, 0.8],
        "n": 1,
        "muted": True,
    },
]
BASELINES = [
    {"label": "most blamed agent", "agent": 0.4, "step": None},
    {"label": "commonest step", "agent": None, "step": 0.1},
]


def _panel(chart, figure):
    return next(p for p in chart["panels"] if p["figure"] == figure)


def test_a_bar_is_as_long_as_its_accuracy_and_its_whisker_spans_the_interval():
    agent = _panel(accuracy_chart(ROWS, BASELINES), "agent")
    bar = agent["bars"][0]
    assert bar["x"] == LABEL_W and bar["width"] == 0.5 * PLOT_W
    assert bar["lo"] == LABEL_W + 0.25 * PLOT_W and bar["hi"] == LABEL_W + 0.75 * PLOT_W
    assert bar["cap_top"] < bar["cy"] < bar["cap_bottom"]
    assert bar["value"] == "50.0%" and bar["interval"] == "(25.0–75.0%)"
    assert bar["title"] == "heuristic: agent accuracy 50.0% (95% interval 25.0–75.0%), n=12"


def test_the_step_panel_sits_right_of_the_agent_panel_with_its_own_zero():
    chart = accuracy_chart(ROWS, BASELINES)
    agent, step = _panel(chart, "agent"), _panel(chart, "step")
    assert step["x0"] > agent["x0"] + PLOT_W + VALUE_W - 1
    assert step["bars"][0]["width"] == round(0.2 * PLOT_W, 1) and step["bars"][0]["x"] == step["x0"]
    assert chart["width"] >= step["x0"] + PLOT_W + VALUE_W


def test_rows_keep_their_order_one_row_height_apart():
    chart = accuracy_chart(ROWS, BASELINES)
    first, second = _panel(chart, "agent")["bars"]
    assert second["cy"] - first["cy"] == ROW_H
    assert [r["label"] for r in chart["rows"]] == ["heuristic", "tiny"]


def test_the_axis_runs_from_0_to_100_percent_across_the_plot():
    ticks = _panel(accuracy_chart(ROWS), "agent")["ticks"]
    assert [t["label"] for t in ticks] == ["0%", "25%", "50%", "75%", "100%"]
    assert ticks[0]["x"] == LABEL_W and ticks[-1]["x"] == LABEL_W + PLOT_W


def test_a_baseline_is_a_line_in_its_own_panel_only():
    chart = accuracy_chart(ROWS, BASELINES)
    (agent_line,) = _panel(chart, "agent")["baselines"]
    (step_line,) = _panel(chart, "step")["baselines"]
    assert agent_line["x"] == LABEL_W + 0.4 * PLOT_W and agent_line["label"] == "most blamed agent 40.0%"
    assert step_line["label"] == "commonest step 10.0%"
    assert agent_line["y2"] == chart["axis_y"] and agent_line["y1"] < _panel(chart, "agent")["bars"][0]["y"]


def test_a_baseline_label_past_the_middle_reads_leftwards_and_stays_in_the_panel():
    chart = accuracy_chart(ROWS, [{"label": "last agent action " * 4, "agent": 0.9, "step": None}])
    (line,) = _panel(chart, "agent")["baselines"]
    assert line["anchor"] == "end" and line["label_x"] < line["x"]
    assert len(line["label"]) * 6.2 <= line["x"] - LABEL_W and line["label"].endswith("…")
    assert line["title"].startswith("last agent action")


def test_small_rows_are_marked_too_few_traces_to_rank_and_the_legend_says_so():
    chart = accuracy_chart(ROWS, BASELINES)
    assert chart["rows"][1]["muted"] and chart["rows"][1]["note"] == "n=1 · too few traces to rank"
    assert chart["rows"][0]["note"] == "n=12" and not _panel(chart, "step")["bars"][0]["muted"]
    assert "too few traces to rank" in [item["label"] for item in chart["legend"]]
    assert "too few traces to rank" not in [item["label"] for item in accuracy_chart(ROWS[:1])["legend"]]


def test_figures_outside_0_to_1_are_clamped_and_a_missing_figure_draws_no_bar():
    rows = [{"label": "odd", "agent": 1.3, "agent_ci": [-0.1, 1.2], "step": None, "n": 3}]
    chart = accuracy_chart(rows)
    (bar,) = _panel(chart, "agent")["bars"]
    assert bar["width"] == PLOT_W and bar["lo"] == LABEL_W and bar["hi"] == LABEL_W + PLOT_W
    assert _panel(chart, "step")["bars"] == []


def test_long_labels_are_shortened_but_kept_whole_for_the_tooltip_and_the_description():
    name = "a-method-with-a-remarkably-long-name-indeed"
    chart = accuracy_chart([{**ROWS[0], "label": name}])
    row = chart["rows"][0]
    assert len(row["label"]) == LABEL_CHARS and row["label"].endswith("…") and row["full_label"] == name
    assert name in chart["desc"]


def test_the_description_reads_every_figure_for_screen_readers():
    desc = accuracy_chart(ROWS, BASELINES)["desc"]
    assert "heuristic: agent 50.0% (25.0–75.0%), step 20.0% (5.0–45.0%), n=12." in desc
    assert "tiny: agent 100.0% (20.0–100.0%), step 0.0% (0.0–80.0%), n=1, too few traces to rank." in desc
    assert "Baseline most blamed agent: agent 40.0%." in desc


def test_the_drawing_fits_its_viewbox():
    chart = accuracy_chart(ROWS, BASELINES)
    assert all(item["text_x"] + len(item["label"]) * 6.2 < chart["width"] for item in chart["legend"])
    assert chart["legend"][0]["y"] < chart["height"] and chart["axis_y"] < chart["legend"][0]["y"]
    assert chart["id"] == "accuracy-chart" and accuracy_chart(ROWS, chart_id="m")["id"] == "m"


def test_no_rows_make_an_empty_chart():
    chart = accuracy_chart([], BASELINES)
    assert chart["rows"] == [] and all(p["bars"] == [] for p in chart["panels"])
