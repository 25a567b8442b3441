"""Write nbs/figures/neurons_pipeline.svg, the neuron chapter's diagram (chapter 14), with _make_figures.py's helpers.

    .venv/bin/python nbs/figures/_make_neurons.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _make_figures import (  # noqa: E402  (the helpers live beside this script)
    BODY, GATE, GATE_BG, GREY, INK, INPUT, INPUT_BG, LIGHT, OUTPUT, OUTPUT_BG, SMALL, STATE, Svg,
)


def neurons_pipeline():
    s = Svg(960, 400, "Text to activations to correlations: finding a unit that tracks a property of the text")
    # 1. the text, one character per column
    chars = list('f("a", [b])')
    x0, y0, cw = 30, 70, 22
    s.text(x0, 40, "1. the text, read one character at a time", BODY, anchor="start", weight="bold")
    for k, ch in enumerate(chars):
        s.rect(x0 + k * cw, y0, cw, 28, INPUT_BG, INPUT, rx=3, width=1)
        s.text(x0 + k * cw + cw / 2, y0 + 19, ch.replace("_", "\\_"), SMALL, colour=INPUT)
    # 2. the properties computed by code, one row per property, one value per character
    props = [("in quote", [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]), ("bracket depth", [0, 1, 1, 1, 1, 1, 1, 2, 2, 1, 0])]
    s.text(x0, 140, "2. properties of the text, by code", BODY, anchor="start", weight="bold")
    for r, (name, vals) in enumerate(props):
        y = 156 + r * 34
        for k, v in enumerate(vals):
            s.rect(x0 + k * cw, y, cw, 26, OUTPUT_BG if v else "white", OUTPUT, rx=3, width=1)
            s.text(x0 + k * cw + cw / 2, y + 18, str(v), SMALL, colour=OUTPUT)
        s.text(x0 + len(vals) * cw + 8, y + 18, name, SMALL, anchor="start", colour=OUTPUT)
    # 3. the LSTM's states: N x H
    s.text(400, 40, "3. the LSTM's cell states", BODY, anchor="start", weight="bold")
    gx, gy, n_units = 440, 70, 9
    shade = [[0.1, 0.2, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1],
             [0.3, 0.5, 0.4, 0.6, 0.2, 0.5, 0.3, 0.4, 0.6, 0.3, 0.5]]
    for j in range(n_units):
        for k in range(len(chars)):
            a = shade[0][k] if j == 2 else shade[1][(k + j) % len(chars)] * 0.6
            s.add(f'<rect x="{gx + k * cw}" y="{gy + j * 22}" width="{cw}" height="22" fill="{STATE}" '
                  f'fill-opacity="{a:.2f}" stroke="white" stroke-width="1"/>')
        s.text(gx - 6, gy + j * 22 + 15, f"unit {j}", SMALL, anchor="end", colour=STATE if j == 2 else GREY)
    s.rect(gx - 2, gy + 2 * 22 - 1, len(chars) * cw + 4, 24, "none", STATE, rx=3, width=2)
    s.text(gx + len(chars) * cw / 2, gy + n_units * 22 + 20,
           "one row per unit (H), one column per character (N)", SMALL, colour=STATE)
    # 4. correlation of every unit with every property
    s.text(700, 40, "4. Pearson r of each unit", BODY, anchor="start", weight="bold")
    s.text(700, 62, "with each property", BODY, anchor="start", weight="bold")
    rs = [0.05, -0.12, 0.93, 0.21, -0.08, 0.15, 0.02, -0.30, 0.11]
    for j, r in enumerate(rs):
        y = gy + j * 22
        s.rect(770, y + 4, 150 * abs(r), 14, GATE_BG if j != 2 else GATE, GATE, rx=2, width=1)
        s.text(760, y + 15, f"{r:+.2f}".replace("-", "\u2212"), SMALL, anchor="end", colour=GATE)
    s.text(810, gy + n_units * 22 + 20, "r with \u201cin quote\u201d", SMALL, colour=GATE)
    s.line(gx + len(chars) * cw + 10, gy + 2 * 22 + 11, 712, gy + 2 * 22 + 11, GREY, 1.2)
    # 5. selection and confirmation
    s.rect(30, 300, 900, 80, "white", LIGHT, rx=10)
    s.text(50, 326,
           "5. pick the best unit (largest |r|) on one held-out slice; measure its r again on another slice,",
           BODY, anchor="start", colour=INK)
    s.text(50, 350,
           "and beside it the best unit of the same LSTM with random weights, and of the trained one against a",
           BODY, anchor="start", colour=INK)
    s.text(50, 372, "shifted property: a maximum over H units is large by chance, a confirmed r above both is not",
           BODY, anchor="start", colour=INK)
    s.line(150, 230, 150, 296, GREY, 1.2)
    return s.save("neurons_pipeline.svg")


if __name__ == "__main__":
    print(neurons_pipeline().relative_to(Path(__file__).resolve().parent.parent.parent))
